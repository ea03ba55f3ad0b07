/**
 * Memory of a process tree, as a container's memory cgroup would charge it:
 * the sum of PSS over the tree (a page shared by N processes counts 1/N in
 * each, so shared memory such as Kamailio's shm pool is counted once), and
 * the sum of RSS beside it (what `ps` shows; it counts shared pages once per
 * process, so it overstates a multi-process server).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface TreeMemory {
  pssMiB: number;
  rssMiB: number;
  /** RSS of the root process alone (the sidecar's own process, without the `ip` commands it runs). */
  rootRssMiB: number;
  processes: number;
}

/** PIDs of `root` and all its descendants (from /proc/<pid>/stat's ppid field). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (pid: number) => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  return out;
}

/** PSS and RSS summed over `root`'s tree; throws when the root is gone (a figure is never made up). */
export function treeMemory(root: number): TreeMemory {
  let pssKiB = 0;
  let rssKiB = 0;
  let processes = 0;
  let rootRssKiB = 0;
  for (const pid of processTree(root)) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    } catch (err) {
      if (pid === root) throw new Error(`process ${root} is gone: ${(err as Error).message}`);
      continue;
    }
    const kib = (key: string) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
      if (!m) throw new Error(`/proc/${pid}/smaps_rollup has no ${key}`);
      return Number(m[1]);
    };
    pssKiB += kib('Pss');
    rssKiB += kib('Rss');
    if (pid === root) rootRssKiB = kib('Rss');
    processes++;
  }
  return { pssMiB: pssKiB / 1024, rssMiB: rssKiB / 1024, rootRssMiB: rootRssKiB / 1024, processes };
}

const TICKS_PER_S = 100; // USER_HZ on Linux (getconf CLK_TCK)

/**
 * CPU seconds used so far by `root`'s tree: user + system time of every live
 * process, plus what the root's reaped children used (cutime + cstime).
 */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
    if (pid === root) ticks += Number(f[13]) + Number(f[14]);
  }
  return ticks / TICKS_PER_S;
}

/** Samples `read` every `everyMs` until stopped; keeps the peak of each field. */
export function peakSampler(read: () => TreeMemory, everyMs = 200) {
  let peak: TreeMemory = read();
  let failure: unknown;
  const timer = setInterval(() => {
    let m: TreeMemory;
    try {
      m = read();
    } catch (err) {
      failure ??= err; // told by stop(): a timer must not crash the run before its clean-up
      return;
    }
    peak = higher(peak, m);
  }, everyMs);
  return {
    stop(): TreeMemory {
      clearInterval(timer);
      if (failure) throw failure;
      return higher(peak, read());
    },
  };
}

function higher(a: TreeMemory, b: TreeMemory): TreeMemory {
  return {
    pssMiB: Math.max(a.pssMiB, b.pssMiB),
    rssMiB: Math.max(a.rssMiB, b.rssMiB),
    rootRssMiB: Math.max(a.rootRssMiB, b.rootRssMiB),
    processes: Math.max(a.processes, b.processes),
  };
}
