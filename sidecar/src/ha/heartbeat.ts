/** The main thread's handle on the heartbeat worker. */
import { Worker } from 'node:worker_threads';
import type { FromWorker, HeartbeatConfig, ToWorker } from './heartbeat-worker.ts';

/** Messages kept while nobody listens (a drops report per tick at most, and the peer's changes). */
const BACKLOG_MAX = 1000;
/** How often the main thread tells the worker it is alive (well inside any sane mainHungMs). */
const ALIVE_EVERY_MS = 100;

export class Heartbeats {
  private readonly worker: Worker;
  private readonly alive: NodeJS.Timeout;
  /** Made with the worker: its 'ready' may come before anyone asks (it did in a pod, and start() hung). */
  private readonly bound: Promise<void>;
  private handler: ((m: FromWorker) => void) | null = null;
  /**
   * What the worker said before anyone listened. The worker tells the peer's
   * view only when it changes, so a lost 'peer' message is lost for good: in a
   * pod, main.ts awaits the Kubernetes client before HaNode.start() listens,
   * the peer was heard meanwhile, and the new pod never saw its master.
   */
  private backlog: FromWorker[] = [];

  /** Receives the worker's messages, first those that came before it was set. */
  set onMessage(h: (m: FromWorker) => void) {
    this.handler = h;
    const early = this.backlog;
    this.backlog = [];
    for (const m of early) h(m);
  }

  constructor(cfg: HeartbeatConfig) {
    this.worker = new Worker(new URL('./heartbeat-worker.ts', import.meta.url), { workerData: cfg });
    this.bound = new Promise((resolve, reject) => {
      const on = (m: FromWorker) => {
        if (m.type === 'ready') {
          this.worker.off('message', on);
          resolve();
        }
      };
      this.worker.on('message', on);
      this.worker.once('error', reject);
    });
    this.bound.catch(() => {}); // the error listener below ends the process anyway
    // Proof of life for the worker: a main thread that stops sending this stops our beats.
    this.alive = setInterval(() => this.worker.postMessage({ type: 'alive' } satisfies ToWorker), ALIVE_EVERY_MS);
    this.alive.unref();
    this.worker.on('message', (m: FromWorker) => {
      if (this.handler) this.handler(m);
      else if (this.backlog.push(m) > BACKLOG_MAX) this.backlog.shift(); // the newest matter most
    });
    this.worker.on('error', (err) => {
      throw err;
    });
  }

  ready(): Promise<void> {
    return this.bound;
  }

  tell(state: Omit<Extract<ToWorker, { type: 'state' }>, 'type'>): void {
    this.worker.postMessage({ type: 'state', ...state } satisfies ToWorker);
  }

  /** A beat the peer sent on the replication stream, for the worker to judge. */
  beatIn(bytes: Buffer, from: string): void {
    this.worker.postMessage({ type: 'beat-in', bytes, from } satisfies ToWorker);
  }

  /** Signs with keys[0] and accepts any of `keys` from now on (a rotation step). */
  setKeys(keys: Buffer[]): void {
    this.worker.postMessage({ type: 'keys', keys } satisfies ToWorker);
  }

  /** Sends our beats to a new peer address from now on. */
  setPeerAddress(address: string): void {
    this.worker.postMessage({ type: 'peer-address', address } satisfies ToWorker);
  }

  async stop(): Promise<void> {
    clearInterval(this.alive);
    this.worker.postMessage({ type: 'stop' } satisfies ToWorker);
    await this.worker.terminate();
  }
}
