/**
 * Work queue keyed by object ("namespace/name"): a key waiting or being
 * worked on is never queued twice; events that arrive while it is worked
 * on make it run once more afterwards (coalescing to the latest state, never
 * replaying every event). Failures retry with capped, jittered backoff.
 */
export type Worker = (key: string) => Promise<RetryAfter | undefined>;
/** Returned by a worker to be called again later (ms). */
export interface RetryAfter {
  retryAfterMs: number;
}

export class KeyedQueue {
  private readonly pending = new Set<string>();
  private readonly running = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly ready: string[] = [];
  private active = 0;
  private closed = false;
  private readonly worker: Worker;
  private readonly concurrency: number;
  private readonly onError: (key: string, err: unknown) => void;

  constructor(worker: Worker, onError: (key: string, err: unknown) => void, concurrency = 4) {
    this.worker = worker;
    this.onError = onError;
    this.concurrency = concurrency;
  }

  add(key: string): void {
    if (this.closed) return;
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.pending.has(key)) return;
    const t = this.timers.get(key);
    if (t) {
      clearTimeout(t);
      this.timers.delete(key);
    }
    this.pending.add(key);
    this.ready.push(key);
    this.pump();
  }

  addAfter(key: string, ms: number): void {
    if (this.closed || this.timers.has(key)) return;
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  get depth(): number {
    return this.pending.size;
  }

  private pump(): void {
    while (this.active < this.concurrency && this.ready.length > 0) {
      const key = this.ready.shift() as string;
      this.pending.delete(key);
      this.running.add(key);
      this.active++;
      void this.work(key);
    }
  }

  private async work(key: string): Promise<void> {
    try {
      const retry = await this.worker(key);
      this.failures.delete(key);
      if (retry) this.addAfter(key, retry.retryAfterMs);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      this.onError(key, err);
      this.addAfter(key, Math.min(200 * 2 ** (n - 1), 30_000) * (0.5 + Math.random()));
    } finally {
      this.running.delete(key);
      this.active--;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }
}
