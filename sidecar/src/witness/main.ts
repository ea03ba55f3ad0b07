/**
 * sipha witness: a tiny UDP arbiter outside the pair that says which side may
 * serve when the two sidecars cannot hear each other (docs/decisions/0005).
 * One process, one pair (one key), one lease record in memory.
 *
 *   SIPHA_WITNESS_LISTEN=ip:port SIPHA_WITNESS_KEY=<base64> (or SIPHA_REPLICATION_KEY=<base64>) \
 *   [SIPHA_WITNESS_HTTP=ip:port] [SIPHA_WITNESS_MAX_TTL_MS=2000] [SIPHA_LOG_LEVEL=info] node sidecar/src/witness/main.ts
 *
 *   SIPHA_REPLICATION_KEY=<base64> node sidecar/src/witness/main.ts --derive-key
 *     prints the SIPHA_WITNESS_KEY to give the witness host instead of the pair's key.
 *
 * A restart forgets the lease, so a (re)started arbiter answers nothing for
 * SIPHA_WITNESS_MAX_TTL_MS (the longest lease it grants): any lease granted
 * before the restart has run out by then, and the next claimant may have it.
 */
import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import { createLogger } from '../log.ts';
import { Arbiter } from './arbiter.ts';
import { keyOf, loadWitnessConfig, type WitnessConfig } from './config.ts';

let config: WitnessConfig;
try {
  if (process.argv.includes('--derive-key')) {
    console.log(keyOf({ SIPHA_REPLICATION_KEY: process.env.SIPHA_REPLICATION_KEY }).toString('base64'));
    process.exit(0);
  }
  config = loadWitnessConfig();
} catch (err) {
  console.error(`sipha-witness: ${(err as Error).message}`);
  process.exit(2);
}
const log = createLogger(config.logLevel, 'sipha-witness');
// performance.now() counts from this process's start: 0 is the earliest instant it could have forgotten a lease.
const arbiter = new Arbiter(config.key, { maxTtlMs: config.maxTtlMs, startedAt: 0 });

// Counted by reason; the reasons are a fixed set, so these maps stay small.
const claims = new Map<string, number>(); // "outcome|reason"
const drops = new Map<string, number>();
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

// Hostile input must not flood the log: one line per reason per window.
const LOG_WINDOW_MS = 10_000;
const lastLogged = new Map<string, number>();
const quiet = (what: string, now: number) => {
  const last = lastLogged.get(what);
  if (last !== undefined && now - last < LOG_WINDOW_MS) return true;
  lastLogged.set(what, now);
  return false;
};

const sock = dgram.createSocket('udp4');
sock.on('error', (err) => log.error({ err }, 'witness socket error'));
sock.on('message', (b, rinfo) => {
  const now = performance.now();
  const r = arbiter.handle(b, now);
  if (r.kind === 'drop') {
    bump(drops, r.reason);
    if (r.reason === 'starting' || quiet(`drop|${r.reason}`, now)) return;
    log.warn({ reason: r.reason, from: `${rinfo.address}:${rinfo.port}`, dropped: drops.get(r.reason) }, 'datagram dropped');
    return;
  }
  const d = r.decision;
  bump(claims, `${d.outcome}|${d.reason}`);
  if (r.capped && !quiet('capped', now))
    log.warn(
      { ordinal: r.claim.ordinal, askedMs: r.claim.ttlMs, maxTtlMs: config.maxTtlMs },
      'a claim asks for a longer lease than SIPHA_WITNESS_MAX_TTL_MS: granted that much (set it to the sidecars’ SIPHA_WITNESS_TTL_MS)',
    );
  if (r.holderChanged) {
    log.info(
      { holder: d.record.holder, term: d.record.term, reason: d.reason, ttlMs: r.claim.ttlMs },
      'lease granted to a new holder',
    );
  } else if (d.outcome === 'refused' && !quiet(`refused|${r.claim.ordinal}`, now)) {
    log.info(
      { ordinal: r.claim.ordinal, term: r.claim.term, holder: d.record.holder, holderTerm: d.record.term },
      'claim refused',
    );
  }
  sock.send(r.answer, rinfo.port, rinfo.address, (err) => {
    if (err && !quiet('send-error', performance.now())) log.warn({ err }, 'cannot send an answer');
  });
});

const registry = new Registry();
new Counter({
  name: 'sipha_witness_claims_total',
  help: 'Claims answered, by outcome and reason',
  labelNames: ['outcome', 'reason'] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [k, n] of claims) {
      const [outcome, reason] = k.split('|') as [string, string];
      this.inc({ outcome, reason }, n);
    }
  },
});
new Counter({
  name: 'sipha_witness_dropped_total',
  help: 'Datagrams dropped unanswered, by reason',
  labelNames: ['reason'] as const,
  registers: [registry],
  collect() {
    this.reset();
    for (const [reason, n] of drops) this.inc({ reason }, n);
  },
});
new Gauge({
  name: 'sipha_witness_holder_term',
  help: 'Term of the unexpired lease holder, by ordinal (absent: nobody holds an unexpired lease)',
  labelNames: ['ordinal'] as const,
  registers: [registry],
  collect() {
    this.reset();
    const l = arbiter.lease;
    if (l && l.expiresAt > performance.now()) this.set({ ordinal: String(l.holder) }, l.term);
  },
});

let server: http.Server | null = null;
if (config.http) {
  const srv = http.createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('Content-Type', registry.contentType);
      res.end(await registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok\n');
    } else {
      res.statusCode = 404;
      res.end('not found\n');
    }
  });
  srv.on('error', (err) => log.error({ err }, 'witness http error'));
  const h = config.http;
  srv.listen(h.port, h.address, () => {
    log.info({ address: h.address, port: (srv.address() as AddressInfo).port }, 'witness http listening');
  });
  server = srv;
}

sock.bind(config.listen.port, config.listen.address, () => {
  const a = sock.address();
  log.info(
    {
      address: a.address,
      port: a.port,
      pair: arbiter.pair.toString(16),
      quietMs: Math.round(arbiter.answersFrom - performance.now()),
    },
    'witness listening',
  );
});
// Claims that arrive before then are counted (dropped, reason 'starting'), not logged one by one.
// Timers lag performance.now() by a fraction of a ms: a ms more, so the line never comes early.
setTimeout(
  () => log.info({ maxTtlMs: config.maxTtlMs }, 'witness answering'),
  Math.max(0, Math.ceil(arbiter.answersFrom - performance.now()) + 1),
);

const stop = (signal: string) => {
  log.info({ signal }, 'stopping');
  sock.close();
  server?.close();
  setTimeout(() => process.exit(0), 50).unref();
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
