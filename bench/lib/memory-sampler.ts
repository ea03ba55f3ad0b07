/**
 * Where a sidecar's memory goes, sampled from inside it: preloaded with
 *   SIPHA_TEST_NODE_ARGS="--import ./bench/lib/memory-sampler.ts" SIPHA_MEMORY_SAMPLES=DIR
 * it appends one JSON line every 200 ms to DIR/<pid>.jsonl: process.memoryUsage()
 * (rss, V8 heap total/used, external, arrayBuffers) in MiB. The main thread only
 * (a worker's heap is in rss, not in heapUsed). A bench tool, not the product:
 * the sidecar itself does not expose Node's default process metrics.
 */
import { appendFileSync } from 'node:fs';
import { isMainThread } from 'node:worker_threads';

const dir = process.env.SIPHA_MEMORY_SAMPLES;
if (dir && isMainThread) {
  const file = `${dir}/${process.pid}.jsonl`;
  const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
  setInterval(() => {
    const m = process.memoryUsage();
    const line = {
      t: Date.now(),
      rss: mib(m.rss),
      heapTotal: mib(m.heapTotal),
      heapUsed: mib(m.heapUsed),
      external: mib(m.external),
      arrayBuffers: mib(m.arrayBuffers),
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  }, 200).unref();
}
