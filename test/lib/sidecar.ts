/** The sipha sidecar as a real process in a bed host. */

import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LINK_TOKEN } from './kamailio.ts';
import type { Host } from './netbed.ts';
import { until, watchOutput } from './procs.ts';
import { MetricAbsentError, parseExposition, readMetric } from './prom-text.ts';

const MAIN = fileURLToPath(new URL('../../sidecar/src/main.ts', import.meta.url));
/** The node flags the sidecar runs with, as its image does (sidecar/Dockerfile). */
export const SIDECAR_NODE_FLAGS = JSON.parse(
  readFileSync(fileURLToPath(new URL('../../sidecar/node-flags.json', import.meta.url)), 'utf8'),
) as string[];

export interface Sidecar {
  readonly child: ChildProcess;
  readonly output: () => string;
  /** Scrapes /metrics inside the host: the raw exposition text. */
  scrape(): string;
  /**
   * Scrapes /metrics inside the host and returns the series' value (the sum of
   * the series whose labels include `labels`); throws when there is none.
   */
  metric(name: string, labels?: Record<string, string>): number;
  /** A histogram's cumulative bucket counts (upper bound -> count, +Inf included), in bound order; throws when absent. */
  histogram(name: string): Array<[number, number]>;
}

/** A sidecar's pino line: its own time (epoch ms) and message, and whatever else it logged. */
export interface LogLine {
  readonly time: number;
  readonly msg: string;
  readonly [field: string]: unknown;
}

/** The pino lines in a sidecar's output, in order (anything else, e.g. a stack trace, is skipped). */
export function logLines(output: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const l = JSON.parse(line) as LogLine;
      if (typeof l.time === 'number') lines.push(l);
    } catch {
      // a line cut short (the process was killed while writing it)
    }
  }
  return lines;
}

export async function startSidecar(
  host: Host,
  env: Record<string, string> = {},
  opts: { nodeArgs?: string[] /** Wait for /healthz only: a sidecar that may hold back is never ready. */; live?: boolean } = {},
): Promise<Sidecar> {
  // SIPHA_TEST_NODE_ARGS: extra node flags for the sidecars a test or bench starts,
  // e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" or "--trace-gc-nvp" (how the
  // replication lag was profiled; see docs/benchmarks.md).
  const nodeArgs = [...(process.env.SIPHA_TEST_NODE_ARGS?.split(' ').filter(Boolean) ?? []), ...(opts.nodeArgs ?? [])];
  const child = host.spawn(process.execPath, [...SIDECAR_NODE_FLAGS, ...nodeArgs, MAIN], {
    env: {
      ...process.env,
      SIPHA_PUBLIC_ADDRESS: host.ip,
      SIPHA_LOG_LEVEL: 'info',
      SIPHA_HTTP_PORT: '9090',
      SIPHA_LINK_TOKEN: LINK_TOKEN,
      ...env,
    },
  });
  const out = watchOutput(child);
  // Ready = /readyz answers 200: the link is up, and a backup is in sync (ha-node.ts notReady).
  await until(
    () => {
      if (child.exitCode !== null) throw new Error(`sidecar exited ${child.exitCode}:\n${out.text().slice(-3000)}`);
      try {
        host.run('curl', ['-sf', '-m', '1', `http://127.0.0.1:9090/${opts.live ? 'healthz' : 'readyz'}`]);
        return true;
      } catch {
        return false;
      }
    },
    15000,
    opts.live ? 'sidecar /healthz' : 'sidecar /readyz',
  );
  const scrape = () => host.run('curl', ['-sf', 'http://127.0.0.1:9090/metrics']);
  return {
    child,
    output: out.text,
    scrape,
    metric: (name, labels = {}) => readMetric(scrape(), name, labels),
    histogram: (name) => {
      const buckets = parseExposition(scrape()).samples.filter((s) => s.name === `${name}_bucket`);
      if (buckets.length === 0) throw new MetricAbsentError(`no histogram ${name} in /metrics`);
      return buckets
        .map((s): [number, number] => [s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le), s.value])
        .sort((x, y) => x[0] - y[0]);
    },
  };
}

/**
 * Hangs the sidecar's main thread for `ms` (a busy loop evaluated through the
 * inspector, as an infinite loop in a handler would), leaving its worker
 * threads running. The sidecar must have been started with --inspect=127.0.0.1:9229.
 */
export function hangMainThread(host: Host, ms: number): void {
  const script = `
    const list = await (await fetch('http://127.0.0.1:9229/json/list')).json();
    const ws = new WebSocket(list[0].webSocketDebuggerUrl);
    ws.onopen = () => {
      ws.send(JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: '{ const t = Date.now(); while (Date.now() - t < ${ms}) {} }' } }));
      setTimeout(() => process.exit(0), 100);
    };
    setTimeout(() => process.exit(3), 3000);`;
  host.run(process.execPath, ['--input-type=module', '-e', script]);
}
