/**
 * One sidecar of a pair: feeds events (peer heartbeats, their loss, the local
 * server's life, the operator's fence) to the role state machine and carries
 * out its decisions: VIP, public sockets, egress gate, replication direction,
 * what the heartbeats say, and the pod label. Side effects run one after the
 * other; the gate opens only once the VIP and the public sockets are ready.
 */
import type { Role } from '../../../contract/names.ts';
import { quietIntervals } from '../config.ts';
import type { RoleReport } from '../kube/role-reporter.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { EdgeProxy } from '../proxy/edge-proxy.ts';
import { parseMessage } from '../sip/scanner.ts';
import type { VipAnnouncer } from '../vip/announcer.ts';
import type { ClientFlow } from '../vip/tcp-tickle.ts';
import { TcpClientFlows, tcpSource } from './client-flows.ts';
import { learnClientFlows } from './flow-successors.ts';
import { Heartbeats } from './heartbeat.ts';
import type { FromWorker } from './heartbeat-worker.ts';
import { acceptedKeys, type Keyring, keyIds } from './keyring.ts';
import { ReplicationReceiver, ReplicationSender, SyncBarrier } from './replication.ts';
import { type Decision, type HaEvent, initialState, type NodeState, step } from './roles.ts';
import { ServerProbe } from './server-probe.ts';
import { StateCache } from './state-cache.ts';
import type { Witness } from './witness.ts';
import { WitnessClaims } from './witness-claims.ts';

export interface HaConfig {
  ordinal: 0 | 1;
  /** The ordinal elected when both start ready together (spec.preferredMaster). */
  preferredMaster: 0 | 1;
  /** This node's own address (heartbeats and replication bind here). */
  nodeAddress: string;
  peerAddress: string;
  heartbeatPort: number;
  replicationPort: number;
  intervalMs: number;
  misses: number;
  startupGraceMs: number;
  replicationMode: 'sync' | 'async';
  /** A main thread silent this long is hung: the heartbeat worker stops beating for it. */
  mainHungMs: number;
  /** Sync mode: an ack later than this ends the stream (held traffic released, backup out of sync, resync). */
  ackDeadlineMs: number;
  /** The pair's keys; setKeys() changes them while running (a rotation step, decision 0012). */
  keys: Keyring;
  /** NAT keepalives to registered UDP clients, sent by the serving master only; 0 disables. */
  natKeepaliveMs: number;
  /** Registrations the state cache keeps (distinct Call-IDs); past it new ones are refused and counted. */
  stateCacheMax: number;
  /** Witness timings (decision 0005), when a witness decides self-elections on silence. */
  witness: { renewMs: number; confirmMs: number; headStart?: boolean; holdRenewMs?: number } | null;
  /** The master's TCP client flows a backup remembers for a takeover: as many as the edge accepts, as long as it keeps them idle. */
  tcpFlows: { max: number; idleMs: number };
}

export interface Timeline {
  detectedAt?: number;
  vipAt?: number;
  servingAt?: number;
  reason?: string;
}

/** At most one warning about a late heartbeat thread this often. */
const TICK_GAP_WARN_MS = 5000;
/** A probe answer slower than T1 (RFC 3261): UDP clients resend into the server's backlog. */
const SLOW_SERVER_MS = 500;

export class HaNode {
  state: NodeState;
  serving = false;
  takeovers = 0;
  lastTimeline: Timeline = {};
  /**
   * Says the role on the pod (in a cluster). Fire and forget: the reporter
   * keeps the latest report and retries it, so a slow or absent API server
   * never delays the VIP or the next role change.
   */
  report: ((r: RoleReport) => void) | null = null;
  /**
   * Looks the peer's name up again (set when the peer is configured by name,
   * e.g. <pair>-1.<peers Service>). Called while the peer is silent: a
   * rescheduled pod comes back under the same name at a new address.
   */
  resolvePeer: (() => Promise<string>) | null = null;
  /**
   * Tells the TCP clients of the old master that their connections are gone
   * (arp mode: vip/tcp-tickle.ts), so a quiet phone's next request opens a new
   * one instead of dying in a reset. Fire and forget, after serving starts.
   */
  tickle: ((flows: ClientFlow[]) => void) | null = null;
  private readonly clientFlows: TcpClientFlows;
  private peerAddress: string;
  private resolveTimer: NodeJS.Timeout | null = null;
  /** Set before start() when cfg.witness is: the UDP witness or the pair's Lease. */
  witness: Witness | null = null;
  private claims: WitnessClaims | null = null;
  private lastReport: RoleReport | null = null;
  private reportedInSync = false;
  private keys: Keyring;
  /** The peer's beats fit none of our keys (the heartbeat worker's verdict). */
  private beatKeyMismatch = false;
  /** When a replication handshake last failed on the key (performance.now()). */
  private streamKeyMismatchAt = -Infinity;
  private reportedKeyMismatch = false;
  private syncWatch: NodeJS.Timeout | null = null;
  /** The longest heartbeat tick gap since the last warning, and when that was (onTickGap). */
  private tickGapMax = 0;
  private tickGapWarnedAt = -Infinity;
  private effects: Promise<void> = Promise.resolve();
  private readonly hb: Heartbeats;
  private readonly sender: ReplicationSender;
  private readonly receiver: ReplicationReceiver;
  private readonly barrier: SyncBarrier;
  private readonly cache: StateCache;
  private pruneTimer: NodeJS.Timeout | null = null;
  private burstOwed = false;
  private startupTimer: NodeJS.Timeout | null = null;
  private probe: ServerProbe | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private linkUp = false;
  private probeHealthy = true;
  private readonly cfg: HaConfig;
  private readonly proxy: EdgeProxy;
  private readonly vip: VipAnnouncer;
  private readonly log: Logger;
  private readonly metrics: Metrics;

  constructor(cfg: HaConfig, proxy: EdgeProxy, vip: VipAnnouncer, log: Logger, metrics: Metrics) {
    this.cfg = cfg;
    this.proxy = proxy;
    this.vip = vip;
    this.log = log;
    this.metrics = metrics;
    this.state = initialState(cfg.ordinal, { preferred: cfg.preferredMaster, witness: cfg.witness !== null });
    this.peerAddress = cfg.peerAddress;
    this.hb = new Heartbeats({
      keys: acceptedKeys(cfg.keys),
      ordinal: cfg.ordinal,
      bindAddress: cfg.nodeAddress,
      port: cfg.heartbeatPort,
      peerAddress: cfg.peerAddress,
      peerPort: cfg.heartbeatPort,
      intervalMs: cfg.intervalMs,
      misses: cfg.misses,
      // No quiet events without the head start (a Lease witness): the master claims at peer loss.
      quietMs: cfg.witness?.headStart === false ? 2 ** 31 - 1 : cfg.intervalMs * quietIntervals(cfg.misses),
      // Told it is unheard, a master claims in either mode: the peer claims at its loss verdict.
      // Two intervals: a whole beat missed, never the jitter of beats on time (at 4 misses one
      // interval was, and the witness would be asked all the time).
      unheardMs: 2 * cfg.intervalMs,
      mainHungMs: cfg.mainHungMs,
    });
    this.keys = cfg.keys;
    this.sender = new ReplicationSender(cfg.keys, { host: cfg.peerAddress, port: cfg.replicationPort }, cfg.ordinal, log, {
      ackDeadlineMs: cfg.ackDeadlineMs,
    });
    this.cache = new StateCache({ maxEntries: cfg.stateCacheMax });
    learnClientFlows(this.cache, proxy, cfg.stateCacheMax);
    this.clientFlows = new TcpClientFlows(cfg.tcpFlows.max, cfg.tcpFlows.idleMs);
    this.receiver = new ReplicationReceiver(cfg.keys, log);
    this.barrier = new SyncBarrier(this.sender);
    this.sender.lag.onLag = (ms) => metrics.replicationLag.observe(ms / 1000);
  }

  async start(): Promise<void> {
    const p = this.proxy;
    // Only a serving master lets anything out; everything else is counted and dropped.
    p.gate = () => (this.serving ? null : `role-${this.state.role}`);
    p.tap = (m, link, slices, flow) => {
      if (!this.serving) return;
      this.sender.replicate(link, slices);
      this.cache.observe(m, link, slices, flow);
    };
    // A backup that connects gets the state cache as a burst, before any live message.
    const barrierOnConnected = this.sender.onConnected;
    this.sender.onConnected = (up) => {
      barrierOnConnected(up);
      if (!up) return;
      // A peer whose server is down can use none of it (and replaying would stall
      // this new master): owe it the burst, reconnect when its server is back.
      if (!this.state.peer?.serverUp) {
        this.burstOwed = true;
        return;
      }
      this.burstOwed = false;
      // In slices, live messages behind it (replication.ts: one turn for 100k held the main thread).
      this.sender.sendBurst(this.cache.burst(), (n) => this.log.info({ messages: n }, 'state cache replayed to the backup'));
    };
    this.sender.onStall = (reason) => {
      this.metrics.resyncs.inc({ reason });
      this.log.error(
        { reason, ackDeadlineMs: this.cfg.ackDeadlineMs },
        'backup stopped acknowledging: held traffic released, resyncing',
      );
    };
    // Sync: egress waits for the backup's ack, but only while the backup is in
    // sync (a peer that resigned or whose server is down never acks; one that is
    // still taking the state burst holds no guarantee yet, and waiting behind a
    // burst of N registrations would hold every reply for the whole burst).
    if (this.cfg.replicationMode === 'sync')
      p.hold = (send) => (this.peerCanApply() && this.sender.inSync ? this.barrier.hold(send) : send());
    this.receiver.apply = (link, payload) => {
      if (!p.serverLink.writeNow(link, [payload])) return false;
      if (this.tickle !== null) {
        const tcp = tcpSource(payload);
        if (tcp !== null) this.clientFlows.heardFrom(tcp);
      }
      // Keep a cache here too: after a takeover this node resyncs whoever joins next.
      if (payload.subarray(0, 9).toString('latin1') === 'REGISTER ') {
        const m = parseMessage(payload);
        if (m.ok) this.cache.observe(m, link, [payload]);
      }
      return true;
    };
    this.receiver.accepting = () => this.state.role !== 'master';
    // A server connection that closed may be a server that restarted empty: a
    // backup then asks for the full state again instead of claiming to hold it.
    p.serverLink.onReset = () => {
      if (this.state.role !== 'master') this.receiver.drop('server-restarted');
    };
    // The server is up when its link is (process alive) and it answers OPTIONS (not hung).
    const serverEvent = () => this.dispatch({ type: 'server', up: this.linkUp && this.probeHealthy });
    p.serverLink.onServer = (up) => {
      this.linkUp = up;
      serverEvent();
    };
    this.probe = new ServerProbe(
      p.serverLink,
      1000,
      3,
      (healthy) => {
        this.log.warn({ healthy }, healthy ? 'SIP server answers OPTIONS again' : 'SIP server stopped answering OPTIONS');
        this.probeHealthy = healthy;
        serverEvent();
      },
      p.linkToken,
    );
    // The server's backlog as the probes meet it; past T1 UDP clients resend into it. Said at most every 10 s.
    let slowSaidAt = Number.NEGATIVE_INFINITY;
    this.probe.onWait = (ms, connection) => {
      this.metrics.serverAnswerSeconds.observe({ connection }, ms / 1000);
      if (ms < SLOW_SERVER_MS || performance.now() - slowSaidAt < 10_000) return;
      slowSaidAt = performance.now();
      this.log.warn(
        { waitedMs: Math.round(ms), connection, role: this.state.role },
        'SIP server answers slowly: a probe waited behind its backlog',
      );
    };
    p.probeAnswer = (m) => this.probe?.consume(m) ?? false;
    // A REGISTER is cached only once the server accepted it (2xx), for the time it granted.
    p.replyTap = (m) => this.cache.answer(m);
    this.pruneTimer = setInterval(() => this.cache.prune(), 10_000);
    this.pruneTimer.unref();
    this.hb.onMessage = (m) => this.onHeartbeat(m);
    this.sender.onBeat = (bytes, from) => this.hb.beatIn(bytes, from);
    const streamMismatch = (from: string) => {
      this.streamKeyMismatchAt = performance.now();
      this.metrics.keyMismatches.inc({ path: 'stream' });
      this.log.error({ from, keys: keyIds(this.keys) }, 'replication handshake signed with a key this side does not hold');
      if (this.keyMismatch !== this.reportedKeyMismatch) this.reportState();
    };
    this.sender.onKeyMismatch = streamMismatch;
    this.receiver.onKeyMismatch = streamMismatch;
    this.receiver.onBeat = (bytes, from) => this.hb.beatIn(bytes, from);

    // A VIP found gone while serving (e.g. its lifetime ran out in a stall) means: stop claiming it.
    this.vip.onLost = (reason) => this.dispatch({ type: 'serve-failed', reason });
    // Whatever an earlier incarnation left (kill -9, OOM) goes before anything else.
    await this.vip.reset();
    await this.receiver.listen(this.cfg.replicationPort, this.cfg.nodeAddress);
    await p.start(true);
    await this.hb.ready();
    this.tellPeer(false);
    if (this.cfg.witness) {
      if (!this.witness) throw new Error('a witness is configured but none was given');
      this.claims = new WitnessClaims(
        this.witness,
        { ...this.cfg.witness, listenMs: this.cfg.intervalMs * this.cfg.misses },
        () => this.state,
        (e) => this.dispatch(e),
        this.metrics,
        this.log,
      );
      // While the backup is not in sync it could only take over with part of the state: the
      // master keeps the lease, so a quiet spell of a backup taking its burst is not a hand-back.
      this.claims.holdWhile = () => !this.sender.inSync;
      this.claims.start();
    }
    this.startupTimer = setTimeout(() => {
      this.dispatch({ type: 'startup-timeout' });
      this.claims?.ask();
    }, this.cfg.startupGraceMs);
    this.startupTimer.unref();
    this.probe.start();
    // Out of sync (a stalled stream, a resync) is news for the operator too: a condition and an Event.
    this.syncWatch = setInterval(() => {
      if (this.inSync !== this.reportedInSync || this.keyMismatch !== this.reportedKeyMismatch) this.reportState();
    }, 500);
    this.syncWatch.unref();
    // While the peer is silent (never heard, or lost), look its name up again every second.
    this.resolveTimer = setInterval(() => {
      if (this.state.peer === null) void this.reresolvePeer();
    }, 1000);
    this.resolveTimer.unref();
    if (this.cfg.natKeepaliveMs > 0) {
      this.keepaliveTimer = setInterval(() => {
        if (!this.serving) return;
        for (const f of this.cache.udpFlows()) p.keepalive(f.address, f.port);
      }, this.cfg.natKeepaliveMs);
      this.keepaliveTimer.unref();
    }
    if (p.serverReady) {
      this.linkUp = true;
      this.dispatch({ type: 'server', up: true });
    }
  }

  get cacheStats(): { entries: number; pending: number; refused: number } {
    return { entries: this.cache.size, pending: this.cache.pendingSize, refused: this.cache.refused };
  }

  get replicationLag(): number {
    return this.sender.seq - this.sender.acked;
  }

  /** Replication send->ack time percentiles (ms) over recent messages. */
  lagMs(ps: readonly number[]): number[] {
    return this.sender.lag.percentiles(ps);
  }

  /** The peer speaks with a key this side does not hold: by its beats, or a handshake in the last 10 s. */
  get keyMismatch(): boolean {
    return this.beatKeyMismatch || performance.now() - this.streamKeyMismatchAt < 10_000;
  }

  /** The pair's keys changed (the key files were rewritten): used from the next beat and the next stream on. */
  setKeys(keys: Keyring): void {
    this.keys = keys;
    this.sender.keys = keys;
    this.receiver.keys = keys;
    this.hb.setKeys(acceptedKeys(keys));
    this.reportState();
  }

  get appliedSeq(): number {
    return this.receiver.applied;
  }

  /** Master: its backup holds the full state now. Anyone else: this node's server does. */
  get inSync(): boolean {
    return this.serving ? this.sender.inSync : this.receiver.inSync;
  }

  private async reresolvePeer(): Promise<void> {
    if (this.resolvePeer === null) return;
    let address: string;
    try {
      address = await this.resolvePeer();
    } catch (err) {
      this.log.debug({ err }, 'peer name not resolvable');
      return;
    }
    if (address === this.peerAddress) return;
    this.log.warn({ from: this.peerAddress, to: address }, 'peer found at a new address');
    this.peerAddress = address;
    this.hb.setPeerAddress(address);
    this.sender.peer = { host: address, port: this.cfg.replicationPort };
  }

  async stop(): Promise<void> {
    if (this.resolveTimer) clearInterval(this.resolveTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.syncWatch) clearInterval(this.syncWatch);
    this.claims?.stop();
    if (this.startupTimer) clearTimeout(this.startupTimer);
    this.probe?.stop();
    if (this.keepaliveTimer) clearInterval(this.keepaliveTimer);
    this.sender.stop();
    this.receiver.close();
    await this.hb.stop();
    if (this.serving) await this.vip.release().catch((err) => this.log.warn({ err }, 'could not release the VIP'));
    this.vip.close();
  }

  /**
   * Raises the highest term this node knows of before it starts (terms read
   * back from where they were recorded, e.g. the pods' term annotations), so
   * a pair whose sidecars both restarted never reuses a term.
   */
  seedTerm(term: number): void {
    if (term > this.state.seenTerm) this.state = { ...this.state, seenTerm: term };
  }

  /** Why this node is not useful yet (null: serving, or a backup whose server holds the master's state). */
  notReady(): string | null {
    if (this.serving) return null;
    if (this.state.role === 'backup') return this.receiver.inSync ? null : 'backup not in sync yet';
    return `role ${this.state.role}`;
  }

  /**
   * Planned switchover: only a serving master with an in-sync backup hands
   * over. It stops taking inbound messages (clients retransmit them to the new
   * master), waits until the backup acked everything (bounded by the ack
   * deadline), then resigns; the backup sees that at once and takes the VIP.
   * Resolves once the peer serves, or with the reason it did not happen.
   */
  async switchover(): Promise<{ ok: boolean; reason: string }> {
    if (this.state.role !== 'master' || !this.serving) return { ok: false, reason: 'not-master' };
    if (!this.peerCanApply() || !this.sender.inSync) return { ok: false, reason: 'backup-not-in-sync' };
    const started = performance.now();
    this.proxy.inboundPaused = true;
    try {
      const drained = await waitFor(
        () => this.sender.acked >= this.sender.seq && this.barrier.waiting === 0,
        this.cfg.ackDeadlineMs,
      );
      if (!drained) return { ok: false, reason: 'backup-did-not-ack' };
      this.log.info({ drainMs: round(performance.now() - started), seq: this.sender.seq }, 'switchover: drained, handing over');
      this.dispatch({ type: 'handover' });
    } finally {
      this.proxy.inboundPaused = false;
    }
    const took = await waitFor(() => this.state.peer?.role === 'master', 5000);
    return took ? { ok: true, reason: 'switchover' } : { ok: false, reason: 'peer-did-not-take-over' };
  }

  /**
   * The operator passes on a user's switchover request (SWITCHOVER_ANNOTATION):
   * hand over if this node is master at `term`; otherwise, or if the switchover
   * is refused, say why on the pod so the operator can tell the user.
   */
  async handover(term: number): Promise<void> {
    const r =
      this.state.role === 'master' && this.state.term === term
        ? await this.switchover()
        : { ok: false, reason: `not-master-at-term-${term}` };
    this.log.info({ term, ...r }, r.ok ? 'handed over as the operator asked' : 'refused the handover the operator asked for');
    if (r.ok || this.lastReport === null) return;
    this.lastReport = { ...this.lastReport, handoverRefused: `${term} ${r.reason}` };
    this.reportState();
  }

  fenced(term: number): void {
    this.dispatch({ type: 'fenced', term });
  }

  /**
   * A tick of the heartbeat thread `gap` ms after the one before. A gap near
   * the detection time means this host did not run the thread for that long:
   * our beats went out that late, and the peer may have counted us lost (the
   * evidence for a takeover under CPU starvation; warned at most every 5 s).
   */
  private onTickGap(gap: number): void {
    this.metrics.heartbeatTickGap.observe(gap / 1000);
    if (gap < (this.cfg.intervalMs * this.cfg.misses) / 2) return;
    this.tickGapMax = Math.max(this.tickGapMax, gap);
    const now = performance.now();
    if (now - this.tickGapWarnedAt < TICK_GAP_WARN_MS) return;
    this.tickGapWarnedAt = now;
    this.log.warn(
      { gapMs: Math.round(this.tickGapMax), detectionMs: this.cfg.intervalMs * this.cfg.misses },
      'the heartbeat thread was not scheduled on time: our beats went out late (a host short of CPU)',
    );
    this.tickGapMax = 0;
  }

  private onHeartbeat(m: FromWorker): void {
    if (m.type === 'peer') {
      // Beats from elsewhere than where ours go: the peer moved (a rescheduled pod),
      // or ours are lost on the way. Its name says where it is now.
      if (m.from !== this.peerAddress) void this.reresolvePeer();
      this.claims?.peerHeard();
      this.dispatch({ type: 'peer', peer: { role: m.role, term: m.term, serverUp: m.serverUp } });
    } else if (m.type === 'peer-quiet') {
      if (m.unheard && this.state.role === 'master' && this.claims)
        this.log.warn({ unheardMs: m.silentMs }, 'the peer does not hear our heartbeats: claiming the witness before it does');
      this.dispatch({ type: 'peer-quiet' });
      this.claims?.peerQuiet(m.heardAt - performance.timeOrigin);
    } else if (m.type === 'peer-lost') {
      this.log.warn({ silentMs: m.silentMs, sinceHeard: m.sinceHeard }, 'peer heartbeats lost');
      this.dispatch({ type: 'peer-lost' });
      this.claims?.peerLost(m.heardAt - performance.timeOrigin);
    } else if (m.type === 'beat-out') {
      // The second path: whichever stream this node has (a master's to its backup, or a backup's from its master).
      this.sender.sendBeat(m.bytes);
      this.receiver.sendBeat(m.bytes);
    } else if (m.type === 'counts') {
      for (const [reason, n] of Object.entries(m.drops)) this.metrics.heartbeatDrops.inc({ reason }, n);
      for (const [path, n] of Object.entries(m.heard)) this.metrics.heartbeatsHeard.inc({ path }, n);
      for (const gap of m.tickGapsMs) this.onTickGap(gap);
    } else if (m.type === 'peer-key') {
      this.beatKeyMismatch = m.mismatch;
      if (m.mismatch) {
        this.metrics.keyMismatches.inc({ path: 'udp' });
        this.log.error(
          { keys: keyIds(this.keys) },
          'the peer is heard with a key this side does not hold: no self-election on its silence',
        );
      } else this.log.warn('key mismatch over');
      this.dispatch({ type: 'peer-key', mismatch: m.mismatch });
      this.reportState();
    } else if (m.type === 'main-hung') this.log.error({ silentMs: m.silentMs }, 'main thread was hung: heartbeats were withheld');
  }

  /** True while the peer is a backup with a live server: only then is an ack worth waiting for. */
  private peerCanApply(): boolean {
    const p = this.state.peer;
    return p !== null && p.role === 'backup' && p.serverUp;
  }

  dispatch(e: HaEvent): void {
    const before = this.state;
    const d = step(before, e);
    this.state = d.state;
    // Nothing may stay held for a peer that will not ack.
    if (!this.peerCanApply() && this.barrier.waiting > 0) this.barrier.flush(true);
    if (this.serving && this.burstOwed && this.state.peer?.serverUp) {
      // The peer's server is back: a fresh stream starts with the burst.
      this.burstOwed = false;
      this.sender.stop();
      this.sender.start(this.state.term);
    }
    if (d.reason === null) {
      if (e.type === 'server') this.tellPeer(true);
      return;
    }
    const now = performance.now();
    this.log.info({ from: before.role, to: d.state.role, term: d.state.term, reason: d.reason, event: e.type }, 'role change');
    if (d.state.role === 'master' && before.role !== 'master') this.claims?.becameMaster();
    const timeline: Timeline = { detectedAt: now, reason: d.reason };
    // Leaving master: stop serving at once (synchronously), then clean up.
    if (before.role === 'master' && d.state.role !== 'master') {
      this.serving = false;
      this.proxy.closePublic();
      this.sender.stop();
      this.barrier.flush(true);
    }
    this.tellPeer(true);
    this.effects = this.effects
      .then(() => this.carryOut(before, d, timeline, now))
      .catch((err) => {
        // carryOut turns its effects' failures into role events; anything else is a bug, but the
        // next role change must still run its effects (a rejected chain would skip them all).
        this.log.error({ err }, 'role change effects failed');
        this.metrics.effectFailures.inc({ reason: 'unexpected' });
      });
  }

  /**
   * The side effects of one role change, in order. Every failure ends here as
   * a role event with its reason (a master that cannot take the VIP resigns,
   * so the peer can), never as an unhandled rejection.
   */
  private async carryOut(before: NodeState, d: Decision, timeline: Timeline, now: number): Promise<void> {
    const to = d.state.role;
    const term = d.state.term;
    if (to === 'master' && this.state.role === 'master' && this.state.term === term) {
      const failed = await this.attempt('vip-acquire-failed', () => this.vip.acquire());
      if (failed) return;
      timeline.vipAt = performance.now();
      if (await this.attempt('public-sockets-failed', () => this.proxy.openPublic())) return;
      if (this.state.role !== 'master' || this.state.term !== term) return; // superseded meanwhile
      this.sender.start(term);
      this.serving = true;
      timeline.servingAt = performance.now();
      if (before.role === 'backup') {
        this.takeovers++;
        this.metrics.takeoverSeconds.observe((timeline.servingAt - now) / 1000);
      }
      // The old master's TCP clients, once this node answers for the VIP (a planned
      // handover closes them itself; tickling them again costs one ACK each).
      const flows = this.clientFlows.take();
      if (flows.length > 0) setImmediate(() => this.tickle?.(flows)); // after this turn's serving and report
      this.lastTimeline = timeline;
      this.log.info(
        {
          term,
          reason: d.reason,
          detectToVipMs: round(timeline.vipAt - now),
          detectToServingMs: round(timeline.servingAt - now),
        },
        'serving as master',
      );
      this.traceFirstMessages(timeline, now);
    } else if (before.role === 'master' && to !== 'master') {
      // A failed removal is not fatal: the address lifetime runs out by itself.
      await this.attempt(null, () => this.vip.release());
    }
    this.lastReport = {
      role: to,
      term,
      reason: d.reason as string,
      since: new Date().toISOString(),
      ...(timeline.servingAt !== undefined ? { gapMs: timeline.servingAt - now } : {}),
    };
    this.reportState();
  }

  /**
   * A second after a takeover, says when the first message came in through the
   * VIP and the first went out, after serving: the time from serving to a
   * client's first answer is the network's (ARP, forwarding) up to "in", the
   * server's and this process's after it.
   */
  private traceFirstMessages(timeline: Timeline, detectedAt: number): void {
    const first = this.proxy.firstAfterOpen;
    setTimeout(() => {
      if (timeline.servingAt === undefined || first.openedAt > timeline.servingAt) return; // opened again since
      const after = (t: number) => (t === 0 ? null : round(t - (timeline.servingAt as number)));
      this.log.info(
        {
          detectToServingMs: round(timeline.servingAt - detectedAt),
          firstInMs: after(first.inAt),
          firstOutMs: after(first.outAt),
        },
        'first messages after taking over',
      );
    }, 1000).unref();
  }

  /** The last role report, with the in-sync state as it is now (re-sent when that changes). */
  private reportState(): void {
    // Before its first role change a node says nothing, unless it must say why it holds back.
    const base =
      this.lastReport ?? (this.keyMismatch ? { role: this.state.role, term: this.state.term, reason: 'key-mismatch' } : null);
    if (base === null) return;
    this.reportedInSync = this.inSync;
    this.reportedKeyMismatch = this.keyMismatch;
    this.report?.({
      ...base,
      inSync: this.reportedInSync,
      keys: keyIds(this.keys),
      keyMismatch: this.reportedKeyMismatch,
    });
  }

  /** Runs one effect; on failure logs and counts it and, with a reason, resigns. True when it failed. */
  private async attempt(reason: string | null, effect: () => Promise<void>): Promise<boolean> {
    try {
      await effect();
      return false;
    } catch (err) {
      this.log.error({ err, reason }, 'role change effect failed');
      this.metrics.effectFailures.inc({ reason: reason ?? 'vip-release-failed' });
      if (reason !== null) this.dispatch({ type: 'serve-failed', reason });
      return true;
    }
  }

  private tellPeer(urgent: boolean): void {
    const s = this.state;
    // Starting, the highest term known (the seed in a cluster): a peer that stood down for want of
    // the witness must not resume over a node that was master after it (roles.ts resumesOver).
    const term = s.role === 'starting' ? Math.max(s.term, s.seenTerm) : s.term;
    this.hb.tell({ role: s.role as Role, term, serverUp: s.serverUp, appliedSeq: this.receiver.applied, urgent });
  }
}

const round = (x: number) => Math.round(x * 10) / 10;

/** Polls `check` every 2 ms until it holds (true) or `ms` pass (false). */
async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (!check()) {
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, 2));
  }
  return true;
}
