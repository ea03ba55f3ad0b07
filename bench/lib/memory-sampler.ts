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
 * is the heap's young or old generation, code, or memory outside V8; every
 * 5 s, the resident memory by mapping ([heap]: glibc's main arena; anonymous
 * mappings by size); and a worker thread (the heartbeat worker) writes its own
 * isolate's heap to DIR/<pid>-t<threadId>.jsonl.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';
import { isMainThread, threadId } from 'node:worker_threads';

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

/** glibc's main arena is [heap]; its other arenas are anonymous 64 MiB reservations; V8's pages are 256 KiB. */
function mappingKind(name: string, sizeMiB: number): string {
  if (name === '[heap]') return 'brk';
  if (name.startsWith('/')) return 'file';
  if (name) return name;
  if (sizeMiB >= 60) return 'anon>=60MiB';
  return sizeMiB >= 1 ? 'anon1-60MiB' : 'anon<1MiB';
}

/** Resident MiB by mapping: the brk heap, file-backed, and anonymous mappings by their size. */
function mappings(): Record<string, number> {
  const out: Record<string, number> = {};
  let kind = '';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      const size = (Number.parseInt(head[2] as string, 16) - Number.parseInt(head[1] as string, 16)) / 1048576;
      const name = (head[3] as string).trim();
      kind = mappingKind(name, size);
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[kind] = (out[kind] ?? 0) + Number(rss[1]) / 1024;
  }
  for (const k of Object.keys(out)) out[k] = Math.round((out[k] as number) * 10) / 10;
  return out;
}

if (dir && !isMainThread && detail) {
  const file = `${dir}/${process.pid}-t${threadId}.jsonl`;
  setInterval(() => {
    const m = process.memoryUsage();
    appendFileSync(
      file,
      `${JSON.stringify({ t: Date.now(), heapTotal: mib(m.heapTotal), heapUsed: mib(m.heapUsed), spaces: spaces() })}\n`,
    );
  }, 1000).unref();
}

if (dir && isMainThread) {
  const file = `${dir}/${process.pid}.jsonl`;
  let n = 0;
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
      ...(detail && n++ % 25 === 0 ? { mappings: mappings() } : {}),
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  }, 200).unref();
}
