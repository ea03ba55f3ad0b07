/**
 * Where a sidecar's memory goes, sampled from inside it: preloaded with
 *   SIPHA_TEST_NODE_ARGS="--import ./bench/lib/memory-sampler.ts" SIPHA_MEMORY_SAMPLES=DIR
 * it appends one JSON line every 200 ms to DIR/<pid>.jsonl: process.memoryUsage()
 * (rss, V8 heap total/used, external, arrayBuffers) in MiB. The main thread only
 * (a worker's heap is in rss, not in heapUsed). A bench tool, not the product:
 * the sidecar itself does not expose Node's default process metrics.
 *
 * SIPHA_MEMORY_DETAIL=1 adds, per sample, what is resident by kind
 * (/proc/self/smaps_rollup: anonymous vs file-backed) and V8's spaces
 * (committed and used, main isolate): enough to say which part of the RSS
 * is the heap's young or old generation, code, or memory outside V8.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { isMainThread } from 'node:worker_threads';

const dir = process.env.SIPHA_MEMORY_SAMPLES;
const detail = process.env.SIPHA_MEMORY_DETAIL === '1';
const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;

/** Resident kB by kind, from the kernel's own rollup of the mappings. */
function resident(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync('/proc/self/smaps_rollup', 'utf8').split('\n')) {
    const m = /^(Rss|Anonymous|Shared_Clean|Private_Clean|Private_Dirty):\s+(\d+) kB/.exec(line);
    if (m) out[m[1] as string] = Math.round((Number(m[2]) / 1024) * 10) / 10;
  }
  return out;
}

function spaces(): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const s of getHeapSpaceStatistics()) out[s.space_name] = [mib(s.physical_space_size), mib(s.space_used_size)];
  return out;
}

if (dir && isMainThread) {
  const file = `${dir}/${process.pid}.jsonl`;
  setInterval(() => {
    const m = process.memoryUsage();
    const line = {
      t: Date.now(),
      rss: mib(m.rss),
      heapTotal: mib(m.heapTotal),
      heapUsed: mib(m.heapUsed),
      external: mib(m.external),
      arrayBuffers: mib(m.arrayBuffers),
      ...(detail ? { resident: resident(), spaces: spaces() } : {}),
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  }, 200).unref();
}
