/**
 * Reads Prometheus text exposition (what /metrics answers) for tests. A figure
 * that is not there is an error, never 0: a renamed or never-exported series
 * must fail the test that reads it, not pass it silently.
 */

export interface Sample {
  /** The series name as exposed (histograms: `x_bucket`, `x_sum`, `x_count`). */
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  samples: Sample[];
  /** Metric family name -> its `# TYPE` (counter, gauge, histogram, summary, untyped). */
  types: Map<string, string>;
}

export class MetricAbsentError extends Error {
  readonly code = 'METRIC_ABSENT';
}

const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the text format; lines it does not understand are an error (the exporter is ours). */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const t = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (t) types.set(t[1] as string, t[2] as string);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, '$1');
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return { samples, types };
}

/**
 * The sum of the series called `name` whose labels include `labels` (one series
 * when the labels pin it down). Throws MetricAbsentError when no series matches.
 */
export function readMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels);
  const hits = parseExposition(text).samples.filter((s) => s.name === name && want.every(([k, v]) => s.labels[k] === v));
  if (hits.length === 0) {
    throw new MetricAbsentError(`no series ${name}${want.length ? JSON.stringify(labels) : ''} in /metrics`);
  }
  return hits.reduce((sum, s) => sum + s.value, 0);
}

/** The metric family names exposed (a histogram's `x`, not `x_bucket`). */
export function familyNames(text: string): Set<string> {
  return new Set(parseExposition(text).types.keys());
}
