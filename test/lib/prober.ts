/**
 * OPTIONS prober: run inside a bed host as
 *   node prober.ts TARGET_IP PORT INTERVAL_MS DURATION_MS OUT.json
 * Sends one OPTIONS every INTERVAL_MS (bounded by DURATION_MS), and writes
 * the send and answer times of every probe (process.hrtime, CLOCK_MONOTONIC:
 * the same clock in every process on the machine) to OUT.json.
 */
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Host, NetBed } from './netbed.ts';
import { watchOutput } from './procs.ts';

export interface ProbeLog {
  sentNs: string[];
  answeredNs: Array<string | null>;
}

/** Milliseconds from `faultNs` to the first answer to a probe sent after it (null: never answered). */
export function gapMs(log: ProbeLog, faultNs: bigint): number | null {
  for (let i = 0; i < log.sentNs.length; i++) {
    if (BigInt(log.sentNs[i] as string) < faultNs) continue;
    const a = log.answeredNs[i];
    if (a) {
      // The first answered probe sent after the fault; earlier probes after the fault went unanswered.
      let best = BigInt(a);
      for (let j = i + 1; j < log.sentNs.length; j++) {
        const aj = log.answeredNs[j];
        if (aj && BigInt(aj) < best) best = BigInt(aj);
        if (BigInt(log.sentNs[j] as string) > best) break;
      }
      return Number(best - faultNs) / 1e6;
    }
  }
  return null;
}

/**
 * The outage a fault caused, seen through the VIP: the longest run of
 * unanswered probes sent after the fault. gap = fault -> the answer to the
 * first probe after that run (with no lost probe: the first answer); lost =
 * probes lost after the run (ARP flapping, a second outage), the last `tail`
 * excluded (their answers may still have been due).
 */
export function outage(
  log: ProbeLog,
  faultNs: bigint,
  tail: number,
): { gapMs: number | null; interruptionMs: number | null; lostAfter: number } {
  const n = log.sentNs.length - tail;
  let best = { from: -1, len: 0 };
  let run = { from: -1, len: 0 };
  for (let i = 0; i < n; i++) {
    if (BigInt(log.sentNs[i] as string) < faultNs) continue;
    if (log.answeredNs[i]) {
      run = { from: -1, len: 0 };
      continue;
    }
    run = run.len === 0 ? { from: i, len: 1 } : { from: run.from, len: run.len + 1 };
    if (run.len > best.len) best = run;
  }
  if (best.len === 0) {
    const g = gapMs(log, faultNs);
    return { gapMs: g === null ? null : round1(g), interruptionMs: 0, lostAfter: 0 };
  }
  const after = best.from + best.len;
  const lostFrom = BigInt(log.sentNs[best.from] as string);
  let lostAfter = 0;
  for (let i = after + 1; i < n; i++) if (!log.answeredNs[i]) lostAfter++;
  // The first answer after the outage (a probe sent earlier may be answered after a later one).
  let first: bigint | null = null;
  for (let i = after; i < log.sentNs.length; i++) {
    const a = log.answeredNs[i];
    if (a && (first === null || BigInt(a) < first)) first = BigInt(a);
    if (first !== null && BigInt(log.sentNs[i] as string) > first) break;
  }
  return {
    gapMs: first === null ? null : round1(Number(first - faultNs) / 1e6),
    interruptionMs: first === null ? null : round1(Number(first - lostFrom) / 1e6),
    lostAfter,
  };
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * Starts the prober in `host` against target:5060 for `durationMs`; `done`
 * resolves with its log once it has finished (bounded by the duration).
 */
export function startProber(
  bed: NetBed,
  host: Host,
  target: string,
  intervalMs: number,
  durationMs: number,
): { done: Promise<ProbeLog> } {
  const out = join(bed.subdir(`probe-${host.name}-${Date.now()}`), 'probe.json');
  const child = host.spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), target, '5060', String(intervalMs), String(durationMs), out],
    {
      env: { ...process.env, PROBER_LOCAL_IP: host.ip },
    },
  );
  return { done: probeLogAtExit(child, out, `prober in ${host.name}`) };
}

/** The log a prober process writes to `out` when it ends. */
export function probeLogAtExit(child: ChildProcess, out: string, what: string): Promise<ProbeLog> {
  const output = watchOutput(child);
  return new Promise<ProbeLog>((resolve, reject) => {
    child.once('exit', (code, signal) => {
      try {
        resolve(JSON.parse(readFileSync(out, 'utf8')) as ProbeLog);
      } catch (err) {
        reject(
          new Error(`${what} left no log (exit ${code ?? signal}): ${(err as Error).message}\n${output.text().slice(-2000)}`),
        );
      }
    });
  });
}

if (process.argv[1]?.endsWith('/prober.ts')) {
  const [target, portText, intervalText, durationText, out] = process.argv.slice(2) as [string, string, string, string, string];
  const port = Number(portText);
  const interval = Math.max(1, Number(intervalText));
  const duration = Math.min(Number(durationText), 600_000);
  const sock = dgram.createSocket('udp4');
  const log: ProbeLog = { sentNs: [], answeredNs: [] };
  // A send that fails (no route while an address moves) is a lost probe, not the prober's end.
  sock.on('error', () => {});
  sock.on('message', (b) => {
    const m = /Call-ID: probe-(\d+)/.exec(b.toString('latin1'));
    if (!m) return;
    const i = Number(m[1]);
    if (i < log.answeredNs.length && log.answeredNs[i] === null) log.answeredNs[i] = process.hrtime.bigint().toString();
  });
  sock.bind(0, () => {
    const { address, port: lport } = sock.address();
    const local = process.env.PROBER_LOCAL_IP ?? address;
    const started = Date.now();
    const tick = () => {
      if (Date.now() - started > duration) {
        setTimeout(() => {
          writeFileSync(out, JSON.stringify(log));
          sock.close();
        }, 500);
        return;
      }
      const i = log.sentNs.length;
      const msg =
        `OPTIONS sip:${target}:${port} SIP/2.0\r\nVia: SIP/2.0/UDP ${local}:${lport};branch=z9hG4bK-probe-${i};rport\r\n` +
        `From: <sip:prober@${local}>;tag=p${i}\r\nTo: <sip:${target}:${port}>\r\nCall-ID: probe-${i}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;
      log.sentNs.push(process.hrtime.bigint().toString());
      log.answeredNs.push(null);
      sock.send(msg, port, target, () => {});
      setTimeout(tick, interval);
    };
    tick();
  });
}
