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
