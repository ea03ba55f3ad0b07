/** Benchmark output: a side-by-side table on stdout and one flat JSON object in bench/out/NAME.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

export type Figures = Record<string, number | string | boolean | null>;

export function median(xs: number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile; NaN for an empty list. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i] as number;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function table(title: string, head: string[], rows: Array<Array<string | number>>): void {
  const cells = [head, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)));
  const line = (r: Array<string | number>) => r.map((c, i) => String(c).padStart(widths[i] as number)).join('  ');
  console.log(`\n${title}`);
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells.slice(1)) console.log(line(r));
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  return String(round(n, Math.abs(n) >= 10 ? 1 : 3));
}

export function writeFigures(name: string, figures: Figures): string {
  const dir = fileURLToPath(new URL('../out/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const path = `${dir}${name}.json`;
  const all = { ...figures, machine_cores: cpus().length, node: process.version, measured_at: new Date().toISOString() };
  writeFileSync(path, `${JSON.stringify(all, null, 2)}\n`);
  console.log(`\nwrote ${path}`);
  return path;
}

/**
 * Quantile q (0..1) of what a Prometheus histogram counted between two scrapes
 * (cumulative buckets, as Sidecar.histogram returns them), interpolated linearly
 * inside its bucket as PromQL's histogram_quantile does. Returns the estimate and
 * the bucket's upper bound (the estimate is only as fine as the buckets).
 */
export function histogramQuantile(
  before: Array<[number, number]>,
  after: Array<[number, number]>,
  q: number,
): { value: number; upTo: number; count: number } {
  const prev = new Map(before);
  const buckets = after.map(([le, n]) => [le, n - (prev.get(le) ?? 0)] as [number, number]);
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return { value: Number.NaN, upTo: Number.NaN, count: 0 };
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, n] of buckets) {
    if (n >= rank) {
      if (le === Number.POSITIVE_INFINITY) return { value: lower, upTo: le, count: total };
      return { value: lower + ((le - lower) * (rank - below)) / Math.max(n - below, 1), upTo: le, count: total };
    }
    lower = le;
    below = n;
  }
  return { value: lower, upTo: Number.POSITIVE_INFINITY, count: total };
}
