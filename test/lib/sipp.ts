/** sipp (Debian's sip-tester) runs in bed hosts, with their figures read back from its files. */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Host, NetBed } from './netbed.ts';
import { watchOutput } from './procs.ts';

export const SCENARIOS = fileURLToPath(new URL('../sipp/', import.meta.url));

export interface SippRun {
  scenario: 'register.xml' | 'register-auth.xml' | 'register-binding.xml' | 'options.xml' | 'uac-call.xml';
  target: string;
  transport?: 'u1' | 'un' | 't1' | 'tn';
  localPort?: number;
  calls: number;
  rate: number;
  /** Concurrent calls cap. */
  limit?: number;
  /** Users for [field0], one per line, used in order. */
  users?: string[];
  service?: string;
  /** Call hold (the scenario's <pause/>), ms. */
  holdMs?: number;
  timeoutS?: number;
  /** Keep per-message response times (rtd) for percentiles. */
  rtt?: boolean;
  /** sipp's -cid_str: the Call-ID format (%u is the call number), e.g. one Call-ID per user across runs. */
  callIdFormat?: string;
  /**
   * sipp's -recv_timeout: a call waiting this long for a message is aborted (a failed call).
   * Without it, a caller whose INVITE got a 180 but never its 200 (sipp stops retransmitting
   * the INVITE after a provisional answer) waits until the run ends, holding a slot of -l.
   */
  recvTimeoutMs?: number;
  /** Called once sipp is started, with its statistics file (one row a second): to follow a long run. */
  onStart?: (statsFile: string) => void;
}

/**
 * sipp's error log without its noise: a message for a call that already ended
 * well ("Dead call ... (successful)", a retransmitted 200 to a BYE) is no
 * failure, and under load there are thousands of them before the first abort
 * (the soak's log showed nothing else in its first 8 KB). What is left, its
 * first 8 KB, and how many were left out.
 */
export function errorEvents(log: string, max = 8000): string {
  const events = log.split(/\n(?=\d{4}-\d\d-\d\d\t)/).slice(1);
  // Left out: late messages to calls that had ended well, and a scenario's own timed jumps (the
  // callee's "no ACK within 500 ms: answer again" is one per 500 ms of wait).
  const kept = events.filter((e) => !/Dead call \S+ \(successful\)|receive timeout on message .*, jumping to label/.test(e));
  const left = events.length - kept.length;
  return `${kept.join('\n').slice(0, max)}${left ? `\n(${left} messages for calls that had ended well, or timed jumps, left out)` : ''}`;
}

/**
 * The first line of each event of sipp's error log, by the call it names (its
 * Call-ID in "Call-Id: X", "Call-Id 'X'" or "Dead call X"), without the time
 * stamps; the messages and the events naming no call are left out. For a call's
 * story: what the other end made of it (a late BYE to a call it had ended
 * "successful" is left out of errorEvents, but tells a story of its own).
 */
export function eventsOfCalls(log: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of log.split(/\n(?=\d{4}-\d\d-\d\d\t)/).slice(1)) {
    const first = (e.split('\n')[0] ?? '').replace(/^\S+\t\S+\t\S+: /, '');
    const id = /Call-Id:? '?([^',\s]+)|Dead call (\S+)/i.exec(first);
    const callId = id?.[1] ?? id?.[2];
    if (callId === undefined) continue;
    out.set(callId, [...(out.get(callId) ?? []), first.slice(0, 200)]);
  }
  return out;
}

/** Which message a run's failed calls stopped at (sipp's per-message counters), and what sipp saw. */
export function failedCallsReport(r: SippResult): string {
  const steps = r.output
    .split('\n')
    .filter((l) => /---|<---|Pause|Aborting|nexpected|Timeout/.test(l))
    .slice(-24)
    .join('\n');
  return `${steps}\n${r.errors.slice(0, 4000)}`;
}

export interface SippResult {
  exitCode: number | null;
  successful: number;
  failed: number;
  /** Calls created per second as sipp itself counts them (CallRate(C)). */
  callRate: number;
  /** Response times in ms from -trace_rtt (all rtd points), when asked for. */
  rttMs: number[];
  elapsedMs: number;
  output: string;
  /** Start of sipp's error log (-trace_err): which message was unexpected, and why a call was aborted. */
  errors: string;
  /** Every cumulative column of sipp's last statistics line (e.g. "OutgoingCall(C)"); absent ones are absent. */
  counters: Record<string, number>;
  /** sipp's statistics file (-trace_stat, a row a second; statRows reads it), kept until the bed is destroyed. */
  statsFile: string;
}

let seq = 0;

export async function runSipp(bed: NetBed, host: Host, run: SippRun): Promise<SippResult> {
  const dir = bed.subdir(`sipp-${host.name}-${++seq}`);
  const stf = join(dir, 'stats.csv');
  const args = [
    '-sf',
    join(SCENARIOS, run.scenario),
    run.target,
    '-i',
    host.ip,
    '-p',
    String(run.localPort ?? 5060),
    '-t',
    run.transport ?? 'u1',
    '-m',
    String(run.calls),
    '-r',
    String(run.rate),
    '-rp',
    '1000',
    '-l',
    String(run.limit ?? Math.max(run.calls, 1)),
    '-nostdin',
    '-timeout',
    `${run.timeoutS ?? 60}s`,
    '-timeout_error',
    '-trace_stat',
    '-stf',
    stf,
    '-fd',
    '1',
    '-max_socket',
    '1000',
    // Unexpected messages and aborted calls go to <scenario>_<pid>_errors.log.
    '-trace_err',
  ];
  if (run.users) {
    const csv = join(dir, 'users.csv');
    writeFileSync(csv, `SEQUENTIAL\n${run.users.join('\n')}\n`);
    args.push('-inf', csv);
  }
  if (run.service) args.push('-s', run.service);
  if (run.callIdFormat) args.push('-cid_str', run.callIdFormat);
  if (run.holdMs !== undefined) args.push('-d', String(run.holdMs));
  if (run.recvTimeoutMs !== undefined) args.push('-recv_timeout', String(run.recvTimeoutMs));
  if (run.rtt) args.push('-trace_rtt', '-rtt_freq', '1');
  const started = Date.now();
  const child = host.spawn('sipp', args, { cwd: dir });
  const out = watchOutput(child, 64 << 10);
  run.onStart?.(stf);
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const elapsedMs = Date.now() - started;
  const { successful, failed, callRate, counters } = readStats(stf);
  const rttMs: number[] = [];
  if (run.rtt) {
    for (const f of readdirSync(dir)) {
      if (!f.endsWith('_rtt.csv')) continue;
      for (const line of readFileSync(join(dir, f), 'utf8').split('\n').slice(1)) {
        const cols = line.split(';');
        if (cols.length >= 2 && cols[1] !== '') rttMs.push(Number(cols[1]));
      }
    }
  }
  let errors = '';
  for (const f of readdirSync(dir)) if (f.endsWith('_errors.log')) errors += errorEvents(readFileSync(join(dir, f), 'utf8'));
  return { exitCode, successful, failed, callRate, rttMs, elapsedMs, output: out.text(), errors, counters, statsFile: stf };
}

/**
 * Starts the called party (uas-call.xml); stop it with bed.stop(). `errorFile`: sipp's error log
 * (why it aborted a call), read with errorEvents().
 */
export function startUas(host: Host, port = 5060, transport: 'u1' | 't1' = 'u1', errorFile?: string) {
  const child = host.spawn('sipp', [
    '-sf',
    join(SCENARIOS, 'uas-call.xml'),
    '-i',
    host.ip,
    '-p',
    String(port),
    '-t',
    transport,
    '-nostdin',
    '-max_socket',
    '1000',
    ...(errorFile ? ['-trace_err', '-error_file', errorFile] : []),
  ]);
  return { child, output: watchOutput(child, 64 << 10).text };
}

/**
 * sipp's statistics file as rows of named columns ("OutgoingCall(C)", "CurrentTime"...);
 * empty while sipp has written nothing yet.
 */
export function statRows(path: string): Array<Record<string, string>> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const lines = text.trim().split('\n');
  const head = (lines[0] ?? '').split(';');
  return lines.slice(1).map((line) => {
    const cols = line.split(';');
    return Object.fromEntries(head.map((h, i) => [h, cols[i] ?? '']));
  });
}

/** A stat row's time (CurrentTime or StartTime: "date<TAB>time<TAB>epoch"), epoch seconds. */
export function statTime(cell: string | undefined): number {
  const t = Number(cell?.split('\t').at(-1));
  if (!Number.isFinite(t) || t <= 0) throw new Error(`not a sipp stat time: ${cell}`);
  return t;
}

/**
 * The rate at which sipp created calls, from its own counters: calls created
 * by the last row written while it was still creating, over the time since it
 * started. The calls' own length and the wait for the last answers do not
 * count (sipp's CallRate(C) divides by the whole run); a sipp held back by its
 * concurrency cap or by a starved CPU shows here as a lower rate.
 */
export function creationRate(rows: Array<Record<string, string>>): number {
  const last = rows.at(-1);
  if (!last) throw new Error('sipp wrote no statistics');
  const total = Number(last['OutgoingCall(C)']);
  const start = statTime(last.StartTime);
  for (let i = rows.length - 1; i >= 0; i--) {
    const r = rows[i] as Record<string, string>;
    const made = Number(r['OutgoingCall(C)']);
    const t = statTime(r.CurrentTime) - start;
    if (made < total && t >= 1) return made / t;
  }
  // Everything was created within the first row: the first row holding them all bounds the rate from below.
  const first = rows.find((r) => Number(r['OutgoingCall(C)']) === total);
  return total / Math.max(statTime(first?.CurrentTime) - start, 1e-3);
}

function readStats(path: string): { successful: number; failed: number; callRate: number; counters: Record<string, number> } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return { successful: 0, failed: 0, callRate: 0, counters: {} };
  }
  const lines = text.trim().split('\n');
  const head = (lines[0] ?? '').split(';');
  const last = (lines[lines.length - 1] ?? '').split(';');
  const col = (name: string) => Number(last[head.indexOf(name)] ?? 0);
  const counters: Record<string, number> = {};
  head.forEach((name, i) => {
    if (name.endsWith('(C)') && last[i] !== undefined && last[i] !== '') counters[name] = Number(last[i]);
  });
  return { successful: col('SuccessfulCall(C)'), failed: col('FailedCall(C)'), callRate: col('CallRate(C)'), counters };
}

export function users(prefix: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);
}

/**
 * Calls through `target` to a called party on `uasHost`: the party registers as
 * "uas", answers every call, and is stopped after; returns the caller's result.
 */
export async function callsToUas(
  bed: NetBed,
  caller: Host,
  uasHost: Host,
  target: string,
  calls: number,
  opts: { rate?: number; holdMs?: number } = {},
): Promise<SippResult> {
  const reg = await runSipp(bed, uasHost, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
  if (reg.successful !== 1) throw new Error(`the called party did not register: ${reg.errors}`);
  const uas = startUas(uasHost);
  try {
    return await runSipp(bed, caller, {
      scenario: 'uac-call.xml',
      target,
      calls,
      rate: opts.rate ?? 10,
      limit: calls,
      service: 'uas',
      holdMs: opts.holdMs ?? 300,
      timeoutS: 30,
    });
  } finally {
    await bed.stop(uas.child);
  }
}
