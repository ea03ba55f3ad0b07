/**
 * The sidecar's Prometheus metrics. The hot path only bumps plain numbers
 * (`hot`); prom-client reads them at scrape time through `collect()`, so
 * counting a message costs an add, not a label hash.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { REJECT_REASONS } from './sip/reasons.ts';

export type DropPath = 'inbound' | 'from_server' | 'egress';

export interface HotCounters {
  inbound: number;
  toServer: number;
  fromServer: number;
  toClient: number;
  keepalives: number;
}

/** What the HA node shows the metrics (read at scrape time). */
export interface HaView {
  role: string;
  term: number;
  lag: number;
  applied: number;
  takeovers: number;
  /** Master: its backup holds the full state. Backup: its server holds the master's. */
  inSync: boolean;
  /** Replication lag percentiles (ms) over recent messages, one sort for all. */
  lagMs: (ps: readonly number[]) => number[];
  /** The state cache (burst resync): accepted registrations kept, REGISTERs awaiting an answer, refused when full. */
  cache: { entries: number; pending: number; refused: number };
}

export function createMetrics() {
  const registry = new Registry();
  const hot: HotCounters = { inbound: 0, toServer: 0, fromServer: 0, toClient: 0, keepalives: 0 };
  const drops = new Map<string, number>(); // "path|reason" -> count
  for (const path of ['inbound', 'from_server', 'egress'] as const) {
    for (const reason of REJECT_REASONS) drops.set(`${path}|${reason}`, 0);
  }
  new Counter({
    name: 'sipha_messages_total',
    help: 'SIP messages handled, by path',
    labelNames: ['path'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ path: 'inbound' }, hot.inbound);
      this.inc({ path: 'to_server' }, hot.toServer);
      this.inc({ path: 'from_server' }, hot.fromServer);
      this.inc({ path: 'to_client' }, hot.toClient);
      this.inc({ path: 'nat_keepalive' }, hot.keepalives);
    },
  });
  new Counter({
    name: 'sipha_messages_dropped_total',
    help: 'SIP messages dropped, by path and reason',
    labelNames: ['path', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of drops) {
        const [path, reason] = key.split('|') as [string, string];
        this.inc({ path, reason }, n);
      }
    },
  });
  const linkUp = new Gauge({
    name: 'sipha_server_link_connections',
    help: 'Open connections to the local SIP server',
    registers: [registry],
  });
  const flows = new Gauge({ name: 'sipha_tcp_flows', help: 'Open TCP connections with SIP peers', registers: [registry] });
  let haView: (() => HaView) | null = null;
  new Gauge({
    name: 'sipha_role',
    help: '1 for the role this sidecar holds',
    labelNames: ['role'] as const,
    registers: [registry],
    collect() {
      this.reset();
      if (haView) this.set({ role: haView().role }, 1);
    },
  });
  new Gauge({
    name: 'sipha_term',
    help: 'Current term',
    registers: [registry],
    collect() {
      this.set(haView?.().term ?? 0);
    },
  });
  new Gauge({
    name: 'sipha_replication_lag_messages',
    help: 'Messages sent to the backup and not yet acknowledged',
    registers: [registry],
    collect() {
      this.set(haView?.().lag ?? 0);
    },
  });
  new Gauge({
    name: 'sipha_replication_applied_seq',
    help: 'Highest replicated sequence applied (backup)',
    registers: [registry],
    collect() {
      this.set(haView?.().applied ?? 0);
    },
  });
  new Gauge({
    name: 'sipha_replication_lag_window_seconds',
    help: 'Replication send->ack time over the last 8192 messages, by quantile',
    labelNames: ['quantile'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const v = haView?.();
      if (!v) return;
      const qs = [50, 90, 99];
      v.lagMs(qs).forEach((x, i) => {
        if (Number.isFinite(x)) this.set({ quantile: String((qs[i] as number) / 100) }, x / 1000);
      });
    },
  });
  new Gauge({
    name: 'sipha_in_sync',
    help: "1 when the pair is in sync as this sidecar sees it (master: its backup acked the full state; backup: its server holds the master's)",
    registers: [registry],
    collect() {
      this.set(haView?.().inSync ? 1 : 0);
    },
  });
  new Gauge({
    name: 'sipha_state_cache_entries',
    help: 'State cache (burst resync): accepted registrations kept (kind=registrations), REGISTERs awaiting the server (kind=pending)',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      const c = haView?.().cache;
      this.set({ kind: 'registrations' }, c?.entries ?? 0);
      this.set({ kind: 'pending' }, c?.pending ?? 0);
    },
  });
  new Counter({
    name: 'sipha_state_cache_refused_total',
    help: 'Accepted registrations the state cache did not keep because it was full (SIPHA_STATE_CACHE_MAX): a joining backup misses them until they refresh',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(haView?.().cache.refused ?? 0);
    },
  });
  new Counter({
    name: 'sipha_takeovers_total',
    help: 'Takeovers by this sidecar since start (backup to serving master)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(haView?.().takeovers ?? 0);
    },
  });
  // The sidecar's own measure of each takeover: from the decision to take over
  // (the failure detected) until it serves (VIP held, public sockets open).
  // Detection itself (k missed heartbeats) comes before and is not in it.
  const takeoverSeconds = new Histogram({
    name: 'sipha_takeover_detect_to_serving_seconds',
    help: 'Per takeover: time from the decision to take over until serving as master (VIP held, sockets open)',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  // Every replicated message's send->ack time since start: the gauge above is a
  // recent window; this is what rates and long-run percentiles are computed from.
  const replicationLag = new Histogram({
    name: 'sipha_replication_lag_seconds',
    help: 'Replication send->ack time of every replicated message',
    buckets: [0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  // The local server's queueing delay as every message meets it: the OPTIONS probe waits
  // behind what was written before it on a traffic connection (a server slower than its
  // clients shows here long before it counts as hung; past T1, 500 ms, UDP clients resend).
  const serverAnswerSeconds = new Histogram({
    name: 'sipha_server_answer_seconds',
    help: "Time the local SIP server took to answer the sidecar's OPTIONS probe, by connection: traffic (behind the messages written before it: the server's backlog) or probe (its own connection)",
    labelNames: ['connection'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  for (const connection of ['traffic', 'probe']) serverAnswerSeconds.zero({ connection });
  const effectFailures = new Counter({
    name: 'sipha_role_effect_failures_total',
    help: 'Side effects of a role change that failed (VIP, public sockets; unexpected: a bug, logged), by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of ['vip-acquire-failed', 'public-sockets-failed', 'vip-release-failed', 'unexpected'])
    effectFailures.inc({ reason }, 0);
  const resyncs = new Counter({
    name: 'sipha_replication_resyncs_total',
    help: 'Replication streams restarted with a full state burst, by reason (master side)',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  for (const reason of ['ack-deadline', 'ack-window-full']) resyncs.inc({ reason }, 0);
  const witnessClaims = new Counter({
    name: 'sipha_witness_claims_total',
    help: 'Claims to the witness while the peer was silent, by verdict (granted, refused, unreachable)',
    labelNames: ['verdict'] as const,
    registers: [registry],
  });
  for (const verdict of ['granted', 'refused', 'unreachable']) witnessClaims.inc({ verdict }, 0);
  // A new master must hold a grant within its confirm time (500 ms with a Lease): how much of it
  // the witness's answers take, on this node's API server path.
  const witnessClaimSeconds = new Histogram({
    name: 'sipha_witness_claim_seconds',
    help: 'Time from sending a claim to the witness until its verdict, by verdict (unreachable: up to the claim deadline)',
    labelNames: ['verdict'] as const,
    buckets: [0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const heartbeatDrops = new Counter({
    name: 'sipha_heartbeats_dropped_total',
    help: 'Heartbeats dropped, by reason: size, magic, version, hmac, field, same-ordinal, unechoed (made before this start, or a peer that has not heard us yet), stale (replayed or reordered)',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const heartbeatsHeard = new Counter({
    name: 'sipha_heartbeats_heard_total',
    help: "The peer's heartbeats that counted, by path: udp, or stream (carried on the replication connection too, so one flooded or blocked path does not look like a dead peer)",
    labelNames: ['path'] as const,
    registers: [registry],
  });
  for (const path of ['udp', 'stream']) heartbeatsHeard.inc({ path }, 0);
  const heartbeatTickGap = new Histogram({
    name: 'sipha_heartbeat_tick_gap_seconds',
    help: "Time between the heartbeat thread's ticks: the interval when the host gives it CPU on time; a gap near interval x misses is the peer's detection time (a host that starves the sidecar so long looks dead to its peer)",
    buckets: [0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1],
    registers: [registry],
  });
  const keyMismatches = new Counter({
    name: 'sipha_key_mismatches_total',
    help: 'Times the peer was found speaking with a key this sidecar does not hold, by path: udp (its heartbeats, judged over a window) or stream (a replication handshake). No self-election follows without a witness (decision 0012)',
    labelNames: ['path'] as const,
    registers: [registry],
  });
  for (const path of ['udp', 'stream']) keyMismatches.inc({ path }, 0);
  const flowRedirects = new Counter({
    name: 'sipha_flow_redirects_total',
    help: "Requests for a client's TCP/TLS flow that was gone, sent on the same client's newest flow instead (it reconnected and registered again, e.g. after a takeover)",
    labelNames: ['transport'] as const,
    registers: [registry],
  });
  const tlsReloads = new Counter({
    name: 'sipha_tls_reloads_total',
    help: 'Re-reads of the TLS certificate files that changed what is served (changed) or could not be used (failed: the certificates in use stay)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const tcpTickles = new Counter({
    name: 'sipha_tcp_tickles_total',
    help: "Tickle ACKs a new master sent to the old master's TCP clients at takeover (arp mode), by result: sent, or failed (the client then learns of its dead connection only when it next writes into it)",
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const result of ['sent', 'failed']) tcpTickles.inc({ result }, 0);
  const linkBusyPauses = new Counter({
    name: 'sipha_link_busy_pauses_total',
    help: 'Times a client TCP connection was paused because the SIP server had not read the link backlog (UDP messages are dropped as server-busy instead)',
    registers: [registry],
  });
  const tcpFlowPauses = new Counter({
    name: 'sipha_tcp_flow_pauses_total',
    help: 'Times a client TCP connection was paused for sending more than SIPHA_TCP_FLOW_RATE messages a second (TCP backpressure slows it; nothing is dropped)',
    registers: [registry],
  });
  return {
    linkBusyPauses,
    tcpFlowPauses,
    tcpTickles,
    tlsReloads,
    flowRedirects,
    replicationLag,
    serverAnswerSeconds,
    takeoverSeconds,
    witnessClaims,
    witnessClaimSeconds,
    heartbeatDrops,
    heartbeatsHeard,
    heartbeatTickGap,
    keyMismatches,
    effectFailures,
    resyncs,
    /** Exposes the HA state through the role/term/lag gauges. */
    ha(view: () => HaView): void {
      haView = view;
    },
    registry,
    hot,
    linkUp,
    flows,
    /** Counts one dropped message; the reason is a bounded label value. */
    drop(path: DropPath, reason: string): void {
      const key = `${path}|${reason}`;
      drops.set(key, (drops.get(key) ?? 0) + 1);
    },
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
