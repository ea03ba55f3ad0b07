/**
 * Delivers the latest of a stream of values, retrying until it lands: one
 * value is pending at most (a newer one replaces it, so memory is bounded and
 * a stale role never overwrites a newer one), every attempt is cut off after
 * a timeout (its AbortSignal fires), failures back off with jitter up to a
 * ceiling, and nothing here ever throws or rejects to the caller. The role
 * reporter uses it so that one failed or hung label patch cannot leave the
 * VIP Service selecting the old master.
 */

export interface LatestRetryOptions<T> {
  /** An attempt still running after this long is aborted and counts as failed. */
  attemptTimeoutMs: number;
  /** First backoff after a failure; doubles per failure up to maxBackoffMs. */
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Called when a value was delivered. */
  delivered?: (value: T) => void;
  /** Called after each failed attempt, before the backoff. */
  failed?: (value: T, err: unknown, attempt: number) => void;
  /** In [0, 1); injected by tests. */
  random?: () => number;
}

export class AttemptTimeout extends Error {
  readonly code = 'ATTEMPT_TIMEOUT';
  constructor(ms: number) {
    super(`attempt timed out after ${ms} ms`);
    this.name = 'AttemptTimeout';
  }
}

/** An attempt cut off because a newer value came. */
class Superseded extends Error {
  constructor() {
    super('superseded by a newer value');
    this.name = 'Superseded';
  }
}

export class LatestRetry<T> {
  private next: { value: T } | null = null;
  private running = false;
  private stopped = false;
  private wake: (() => void) | null = null;
  private inFlight: AbortController | null = null;
  private readonly send: (value: T, signal: AbortSignal) => Promise<void>;
  private readonly opts: LatestRetryOptions<T>;

  constructor(send: (value: T, signal: AbortSignal) => Promise<void>, opts: LatestRetryOptions<T>) {
    this.send = send;
    this.opts = opts;
  }

  /**
   * Queues `value` in place of anything not yet delivered, and cuts off an
   * attempt in flight: its answer would land an older value (a backup's pod
   * labelled master) just before the newer one. Never throws.
   */
  offer(value: T): void {
    if (this.stopped) return;
    this.next = { value };
    this.inFlight?.abort(new Superseded());
    if (!this.running) void this.loop();
  }

  /** True while a value waits or an attempt runs. */
  get busy(): boolean {
    return this.running;
  }

  /** Drops what is pending; an attempt in flight is aborted. */
  stop(): void {
    this.stopped = true;
    this.next = null;
    this.inFlight?.abort(new Error('stopped'));
    this.wake?.();
  }

  private async loop(): Promise<void> {
    this.running = true;
    let backoff = this.opts.minBackoffMs;
    let attempt = 0;
    while (this.next && !this.stopped) {
      const { value } = this.next;
      this.next = null;
      attempt++;
      try {
        await this.attempt(value);
        attempt = 0;
        backoff = this.opts.minBackoffMs;
        this.call(() => this.opts.delivered?.(value));
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof Superseded) continue; // no failure: the newer value goes at once
        this.next ??= { value }; // a newer value, if one came meanwhile, wins
        this.call(() => this.opts.failed?.(value, err, attempt));
        const wait = backoff * (0.5 + (this.opts.random ?? Math.random)());
        backoff = Math.min(backoff * 2, this.opts.maxBackoffMs);
        await this.sleep(wait);
      }
    }
    this.running = false;
  }

  private async attempt(value: T): Promise<void> {
    const ac = new AbortController();
    this.inFlight = ac;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new AttemptTimeout(this.opts.attemptTimeoutMs);
        ac.abort(err);
        reject(err);
      }, this.opts.attemptTimeoutMs);
    });
    try {
      // A send that throws synchronously is a failed attempt like any other.
      // The send may ignore its signal: a cut-off attempt ends here all the same.
      const cut = new Promise<never>((_, reject) => {
        ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true });
      });
      await Promise.race([Promise.resolve().then(() => this.send(value, ac.signal)), timeout, cut]);
    } finally {
      clearTimeout(timer);
      this.inFlight = null;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  /** A throwing callback must not stop delivery. */
  private call(f: () => void): void {
    try {
      f();
    } catch {
      // the callbacks only log
    }
  }
}
