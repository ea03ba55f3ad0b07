/**
 * The TLS counterpart of prober.ts: every `intervalMs` a new TLS connection
 * to target:5061 (a full handshake, no session resumption) carrying one
 * OPTIONS; answered = its 200 arrived within 1 s. What a TLS phone that lost
 * its connection sees of a failover: the first new connection that works.
 * Same log as prober.ts (gapMs / outage read it).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import type { Host, NetBed } from './netbed.ts';
import { type ProbeLog, probeLogAtExit } from './prober.ts';

export function startTlsProber(
  bed: NetBed,
  host: Host,
  target: string,
  caFile: string,
  intervalMs: number,
  durationMs: number,
): { done: Promise<ProbeLog> } {
  const out = join(bed.subdir(`tls-probe-${host.name}-${Date.now()}`), 'probe.json');
  const child = host.spawn(process.execPath, [
    fileURLToPath(import.meta.url),
    target,
    caFile,
    String(intervalMs),
    String(durationMs),
    out,
  ]);
  return { done: probeLogAtExit(child, out, 'TLS prober') };
}

if (process.argv[1]?.endsWith('tls-prober.ts')) {
  const [target, caFile, intervalText, durationText, out] = process.argv.slice(2) as [string, string, string, string, string];
  const ca = readFileSync(caFile);
  const interval = Math.max(1, Number(intervalText));
  const duration = Math.min(Number(durationText), 600_000);
  const log: ProbeLog = { sentNs: [], answeredNs: [] };
  const probe = (i: number) => {
    const s = tls.connect({ host: target, port: 5061, ca }, () => {
      s.write(
        `OPTIONS sip:${target} SIP/2.0\r\nVia: SIP/2.0/TLS ${s.localAddress}:${s.localPort};branch=z9hG4bK-tp${i};rport\r\n` +
          `Max-Forwards: 70\r\nFrom: <sip:prober@${target}>;tag=tp${i}\r\nTo: <sip:${target}>\r\nCall-ID: tls-probe-${i}\r\n` +
          'CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n',
      );
    });
    const timer = setTimeout(() => s.destroy(), 1000);
    s.on('data', (b: Buffer) => {
      if (!/^SIP\/2\.0 200/.test(b.toString('latin1'))) return;
      if (log.answeredNs[i] === null) log.answeredNs[i] = process.hrtime.bigint().toString();
      clearTimeout(timer);
      s.destroy();
    });
    s.on('error', () => {});
  };
  const started = Date.now();
  let i = 0;
  const tick = setInterval(() => {
    if (Date.now() - started >= duration) {
      clearInterval(tick);
      setTimeout(() => {
        writeFileSync(out, JSON.stringify(log));
        process.exit(0);
      }, 1100);
      return;
    }
    log.sentNs.push(process.hrtime.bigint().toString());
    log.answeredNs.push(null);
    probe(i++);
  }, interval);
}
