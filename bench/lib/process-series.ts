/**
 * A process's resident memory and open file descriptors over a long run,
 * and how fast they grow: samples from /proc/PID/status (VmRSS) and
 * /proc/PID/fd, a series per process (a restarted process starts a new one),
 * and the least-squares slope over all of a node's series with an intercept
 * of their own (each restart starts from its own level; only the growth
 * within a process counts).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface Sample {
  /** Seconds since the run started. */
  t: number;
  rssMiB: number;
  fds: number;
}

export interface Series {
  pid: number;
  samples: Sample[];
}

/** VmRSS and the open descriptor count of one process; throws when it is gone (no made-up figure). */
export function readProcess(pid: number): { rssMiB: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS (a zombie?)`);
  return { rssMiB: Number(m[1]) / 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** The series of one node: a sample goes to the series of its PID, a new PID starts a new series. */
export class NodeSeries {
  readonly series: Series[] = [];

  add(pid: number, sample: Sample): void {
    let s = this.series.at(-1);
    if (s?.pid !== pid) {
      s = { pid, samples: [] };
      this.series.push(s);
    }
    s.samples.push(sample);
  }

  /** Samples over all series. */
  count(): number {
    return this.series.reduce((n, s) => n + s.samples.length, 0);
  }

  /**
   * Per hour, the common slope of `field` over every series with at least 3 samples (from
   * `fromS` on, when given); NaN when there is none.
   */
  slopePerHour(field: 'rssMiB' | 'fds', fromS = 0): number {
    return pooledSlope(
      this.series
        .map((s) => s.samples.filter((x) => x.t >= fromS))
        .filter((xs) => xs.length >= 3)
        .map((xs) => xs.map((x) => [x.t / 3600, x[field]] as [number, number])),
    );
  }
}

/**
 * Least-squares slope shared by several groups of (x, y) points, each group
 * with its own intercept: sum over groups of (x - mean x)(y - mean y), over
 * the sum of (x - mean x)^2. With one group it is the ordinary slope.
 */
export function pooledSlope(groups: Array<Array<[number, number]>>): number {
  let sxy = 0;
  let sxx = 0;
  for (const g of groups) {
    if (g.length < 2) continue;
    const mx = g.reduce((n, [x]) => n + x, 0) / g.length;
    const my = g.reduce((n, [, y]) => n + y, 0) / g.length;
    for (const [x, y] of g) {
      sxy += (x - mx) * (y - my);
      sxx += (x - mx) ** 2;
    }
  }
  return sxx === 0 ? Number.NaN : sxy / sxx;
}
