/** The main thread's handle on the heartbeat worker. */
import { Worker } from 'node:worker_threads';
import type { FromWorker, HeartbeatConfig, ToWorker } from './heartbeat-worker.ts';

export class Heartbeats {
  private readonly worker: Worker;
  onMessage: (m: FromWorker) => void = () => {};

  constructor(cfg: HeartbeatConfig) {
    this.worker = new Worker(new URL('./heartbeat-worker.ts', import.meta.url), { workerData: cfg });
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (err) => {
      throw err;
    });
  }

  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      const on = (m: FromWorker) => {
        if (m.type === 'ready') {
          this.worker.off('message', on);
          resolve();
        }
      };
      this.worker.on('message', on);
      this.worker.once('error', reject);
    });
  }

  tell(state: Omit<Extract<ToWorker, { type: 'state' }>, 'type'>): void {
    this.worker.postMessage({ type: 'state', ...state } satisfies ToWorker);
  }

  async stop(): Promise<void> {
    this.worker.postMessage({ type: 'stop' } satisfies ToWorker);
    await this.worker.terminate();
  }
}
