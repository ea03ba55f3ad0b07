/**
 * Runs bench/lib/tls-load.ts in a bed host (one or more processes, the rate
 * split between them) and climbs a ladder of target rates against several
 * systems, rungs alternated so the machine's noise hits them alike. Every
 * figure comes from the load processes' own counters.
 */
import { fileURLToPath } from 'node:url';
import type { Host, NetBed } from '../../test/lib/netbed.ts';
import { until, watchOutput } from '../../test/lib/procs.ts';
import { treeCpuSeconds } from './memory.ts';
import { percentile, round } from './report.ts';
import type { LoadResult, LoadSpec } from './tls-load.ts';

const LOAD = fileURLToPath(new URL('./tls-load.ts', import.meta.url));

/** The load processes' results added up: one LoadResult's figures, with rates and CPU summed over the processes. */
export type Merged = Omit<LoadResult, 'attempted' | 'elapsedS' | 'cpuUserMs' | 'cpuSystemMs'> & {
  /** Sum over processes of ok / that process's own elapsed time. */
  achievedPerS: number;
  /** CPU the load processes used, ms (user + system). */
  loadCpuMs: number;
};

const addCounts = (into: Record<string, number>, from: Record<string, number>) => {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
};

/** Runs `processes` load processes at rate/processes each; throws if one fails or overruns. */
export async function runTlsLoad(
  bed: NetBed,
  host: Host,
  spec: Omit<LoadSpec, 'tag'> & { tag: string },
  processes: number,
): Promise<Merged> {
  const deadlineMs = (spec.seconds + (2 * spec.timeoutMs) / 1000 + 20) * 1000;
  const runs = Array.from({ length: processes }, async (_, k): Promise<LoadResult> => {
    const part: LoadSpec = {
      ...spec,
      rate: spec.rate / processes,
      ...(spec.pool ? { pool: Math.ceil(spec.pool / processes) } : {}),
      maxInFlight: Math.ceil(spec.maxInFlight / processes),
      tag: `${spec.tag}p${k}`,
    };
    const child = host.spawn(process.execPath, [LOAD, JSON.stringify(part)]);
    const out = watchOutput(child, 64 << 20);
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const timer = setTimeout(() => void bed.stop(child, 'SIGKILL'), deadlineMs);
    const code = await exit;
    clearTimeout(timer);
    const line = out
      .text()
      .split('\n')
      .find((l) => l.startsWith('{'));
    if (code !== 0 || line === undefined) throw new Error(`tls-load exited ${code}:\n${out.text().slice(-2000)}`);
    return JSON.parse(line) as LoadResult;
  });
  const results = await Promise.all(runs);
  const m: Merged = {
    planned: 0,
    ok: 0,
    failed: 0,
    timedOut: 0,
    skipped: 0,
    achievedPerS: 0,
    latenciesUs: [],
    protocols: {},
    ciphers: {},
    groups: {},
    errors: {},
    resumed: 0,
    machineBusyPct: 0,
    loadCpuMs: 0,
    poolSetupMs: 0,
  };
  for (const r of results) {
    m.planned += r.planned;
    m.ok += r.ok;
    m.failed += r.failed;
    m.timedOut += r.timedOut;
    m.skipped += r.skipped;
    m.achievedPerS += r.elapsedS > 0 ? r.ok / r.elapsedS : 0;
    for (const x of r.latenciesUs) m.latenciesUs.push(x);
    addCounts(m.protocols, r.protocols);
    addCounts(m.ciphers, r.ciphers);
    addCounts(m.groups, r.groups);
    addCounts(m.errors, r.errors);
    m.resumed += r.resumed;
    m.machineBusyPct += r.machineBusyPct / results.length;
    m.loadCpuMs += r.cpuUserMs + r.cpuSystemMs;
    m.poolSetupMs = Math.max(m.poolSetupMs, r.poolSetupMs);
  }
  return m;
}

export interface Target {
  host: string;
  port: number;
  /** The server's processes (each one's tree summed): CPU per rung. For the sidecar, its Kamailio too. */
  pids: number[];
  /** True once the server's process has exited (a crash under load ends its ladder). */
  exited: () => boolean;
}

export interface Rung {
  ladder: string;
  system: string;
  rate: number;
  result: Merged;
  /** Share of planned requests that did not get their 200, %. */
  lostPct: number;
  /** The server's CPU time over the rung (load start-up and pool set-up included) per request answered 200, µs; NaN if it crashed. */
  serverCpuUsPerOk: number;
  /** The server's process exited during the rung. */
  crashed: boolean;
  pass: boolean;
}

export interface LadderOutcome<S extends string> {
  rungs: Rung[];
  /** Per system: the last rung passed (null if none), and whether it was the ladder's top. */
  best: Record<S, { rung: Rung | null; atTop: boolean; failedAt: number | null; crashedAt: number | null }>;
}

/**
 * Climbs `rates`, then extends by x1.5 (up to `extend` more rungs) while a
 * system still passes, so the ladder goes past both limits. A rung passes with
 * < 1% lost and achieved >= 95% of the target.
 */
export async function tlsLadder<S extends string>(
  bed: NetBed,
  client: Host,
  opts: {
    label: string;
    targets: Record<S, Target>;
    rates: number[];
    extend: number;
    base: Omit<LoadSpec, 'host' | 'port' | 'rate' | 'tag'>;
    processes: number;
  },
): Promise<LadderOutcome<S>> {
  const systems = Object.keys(opts.targets) as S[];
  const alive = new Set<S>(systems);
  const best = Object.fromEntries(
    systems.map((s) => [s, { rung: null, atTop: false, failedAt: null, crashedAt: null }]),
  ) as LadderOutcome<S>['best'];
  const rungs: Rung[] = [];
  const rates = [...opts.rates];
  for (let i = 0; i < rates.length && alive.size > 0; i++) {
    const rate = rates[i] as number;
    for (const system of systems) {
      if (!alive.has(system)) continue;
      const t = opts.targets[system];
      const cpu = () => t.pids.reduce((n, pid) => n + treeCpuSeconds(pid), 0);
      const cpu0 = cpu();
      const result = await runTlsLoad(
        bed,
        client,
        { ...opts.base, host: t.host, port: t.port, rate, tag: `${opts.label[0]}${system[0]}${rate}` },
        opts.processes,
      );
      // Kamailio's main process ends the others before it exits itself: after a
      // failed rung, give a dying server a moment to show it crashed.
      if (result.planned - result.ok >= 0.01 * result.planned) await until(t.exited, 3000, 'exit').catch(() => undefined);
      const crashed = t.exited();
      const serverCpuUsPerOk = crashed ? Number.NaN : ((cpu() - cpu0) * 1e6) / Math.max(1, result.ok);
      // Everything planned that did not end in a 200: failed, timed out, skipped, never sent.
      const lostPct = (100 * (result.planned - result.ok)) / result.planned;
      const pass = !crashed && lostPct < 1 && result.achievedPerS >= 0.95 * rate;
      const rung: Rung = { ladder: opts.label, system, rate, result, lostPct, serverCpuUsPerOk, crashed, pass };
      rungs.push(rung);
      console.log(
        `${opts.label} ${system} ${rate}/s: achieved ${round(result.achievedPerS, 0)}/s, lost ${round(lostPct, 2)}%` +
          ` (failed ${result.failed}, timed out ${result.timedOut}, skipped ${result.skipped}), p99 ${round(percentile(result.latenciesUs, 99) / 1000, 2)} ms,` +
          ` server ${round(serverCpuUsPerOk, 0)} µs CPU/ok, machine ${round(result.machineBusyPct, 0)}% busy, load ${round(result.loadCpuMs / 1000, 2)} CPU s -> ${pass ? 'pass' : crashed ? 'FAIL (server process exited)' : 'FAIL'}` +
          (Object.keys(result.errors).length ? ` ${JSON.stringify(result.errors)}` : ''),
      );
      if (pass) best[system].rung = rung;
      else {
        alive.delete(system);
        best[system].failedAt = rate;
        if (crashed) best[system].crashedAt = rate;
      }
    }
    const extended = rates.length - opts.rates.length;
    if (i === rates.length - 1 && alive.size > 0 && extended < opts.extend) rates.push(Math.ceil((rate * 1.5) / 100) * 100);
  }
  for (const s of alive) best[s].atTop = true;
  return { rungs, best };
}
