/**
 * Heartbeats, in a worker thread of their own: a GC pause or a busy event
 * loop in the proxy must neither delay our beats nor make us miss the
 * peer's (no false takeover under load). The main thread posts our state;
 * the worker posts what the peer says and when it goes quiet.
 */
import dgram from 'node:dgram';
import { MessageChannel, parentPort, workerData } from 'node:worker_threads';
import type { Role } from '../../../contract/names.ts';
import { decodeHeartbeat, encodeHeartbeat, HEARD_NEVER } from '../../../contract/wire.ts';
import { afterPendingIo } from './after-pending-io.ts';
import { BeatFreshness } from './beat-freshness.ts';

export interface HeartbeatConfig {
  /** The pair's keys, the signing key first (more than one while a rotation runs). */
  keys: Uint8Array[];
  ordinal: 0 | 1;
  bindAddress: string;
  port: number;
  peerAddress: string;
  peerPort: number;
  intervalMs: number;
  misses: number;
  /** Silence this long is reported as 'peer-quiet' (less than intervalMs x misses). */
  quietMs: number;
  /**
   * A peer that says it has not heard us this long is reported as 'peer-quiet'
   * (unheard): it will count us lost at intervalMs x misses and claim the witness.
   */
  unheardMs: number;
  /**
   * The main thread must say it is alive at least this often; past it the
   * worker stops beating, so the peer takes over from a hung proxy instead of
   * trusting beats from a thread that is not the one carrying SIP.
   */
  mainHungMs: number;
}

export type ToWorker =
  | { type: 'state'; role: Role; term: number; serverUp: boolean; appliedSeq: number; urgent?: boolean }
  | { type: 'alive' }
  /** The peer was found at a new address (re-resolved by name). */
  | { type: 'peer-address'; address: string }
  /** A beat the peer sent on the replication stream (the second path), judged like one by UDP. */
  | { type: 'beat-in'; bytes: Uint8Array; from: string }
  /** The pair's keys changed (a rotation step): the signing key first. */
  | { type: 'keys'; keys: Uint8Array[] }
  /**
   * Tests only: this thread stops for `ms`, as a descheduled thread on a busy
   * host does; now, or 'after-tick': while polling for I/O right after the
   * next tick, between the tick's verdict being scheduled and judged (the
   * worst moment, which a real stall hits by chance).
   */
  | { type: 'stall'; ms: number; at?: 'now' | 'after-tick' }
  | { type: 'stop' };
/** What happened on this side since the peer's last counted beat (reset by each). */
export interface SilenceEvidence {
  /** Our drops by reason (beats of the peer we refused, our own sends that failed). */
  drops: Record<string, number>;
  /** Copies of the latest counted beat (its second path): the peer's beats did arrive, only not newer ones. */
  duplicates: number;
  /** The longest gap between this thread's ticks (ms): how late we ran. */
  maxTickGapMs: number;
}

export type FromWorker =
  /** `from`: the address the peer's beats come from (it may differ from where ours go: a moved peer). */
  | { type: 'peer'; role: Role; term: number; serverUp: boolean; appliedSeq: number; from: string }
  /** `sinceHeard`: what this thread saw in the silence, so a loss can be told from a lost beat's cause. */
  | { type: 'peer-lost'; silentMs: number; heardAt: number; sinceHeard: SilenceEvidence }
  /**
   * The peer has been silent for `quietMs`, well before it counts as lost: a
   * master asks the witness now, so that it holds the lease before the peer
   * could claim it (if the peer lost us too, it asks at `misses` intervals).
   * `unheard`: the peer is heard but says it has not heard us for `unheardMs`
   * (a loss one way): the same race, so the same claim; `heardAt` is then
   * when the peer last heard us, and `silentMs` how long ago.
   */
  | { type: 'peer-quiet'; silentMs: number; heardAt: number; unheard?: boolean }
  /**
   * Since the last report: beats dropped, by reason, and beats that counted, by path
   * ('udp', 'stream'). Counted here: a flood must not become a flood of messages.
   */
  | {
      type: 'counts';
      drops: Record<string, number>;
      heard: Record<string, number>;
      /**
       * Time between this thread's ticks since the last report (ms): intervalMs when it
       * runs on time, more when it was not scheduled (our beats went out that late).
       */
      tickGapsMs: number[];
    }
  /** Our beat as sent by UDP, for the main thread to send on the replication stream too. */
  | { type: 'beat-out'; bytes: Uint8Array }
  /** Beats were withheld because the main thread was silent this long (read once it answers again). */
  | { type: 'main-hung'; silentMs: number }
  /**
   * Well-formed beats that fit none of our keys keep coming while no valid one
   * does: the peer runs with another key (decision 0012). Said when it starts and ends.
   */
  | { type: 'peer-key'; mismatch: boolean }
  | { type: 'ready' };

const cfg = workerData as HeartbeatConfig;
let keys = cfg.keys.map((k) => Buffer.from(k));
const port = parentPort;
if (!port) throw new Error('heartbeat-worker runs as a worker thread');

// Ms since the epoch: a recording of an earlier start is always older (beat-freshness.ts).
const incarnation = Date.now();
const freshness = new BeatFreshness(incarnation);
let beat = 0;
let me: Extract<ToWorker, { type: 'state' }> = { type: 'state', role: 'starting', term: 0, serverUp: false, appliedSeq: 0 };
let lastHeard = 0;
/** A beat of the peer counted since this thread started (our beats say HEARD_NEVER before). */
let everHeard = false;
let lost = true;
/**
 * The peer says it does not hear us, and 'peer-quiet' was said for it: when the peer last heard
 * us, as last said (epoch ms). null: the peer hears us.
 */
let unheardSince: number | null = null;
/** 'peer-quiet' was said for this silence: the next beat is told even if nothing changed. */
let quiet = false;
let quietTimer: NodeJS.Timeout | null = null;
/**
 * Timers run on the event loop's clock, whole milliseconds that lag
 * performance.now(): the quiet timer may fire a fraction early, find the
 * silence short of quietMs, and must then look again (it used to say nothing,
 * and the master's early claim never came: decision 0005's head start lost).
 */
let quietRecheck: NodeJS.Timeout | null = null;
/**
 * Silence is judged after the loop has read what arrived (a thread that was
 * descheduled would otherwise call a live peer quiet or lost with its beats
 * unread in the socket; found in CI, a stall right after the tick). This
 * thread's loop is cheap: up to 3 more polls when a stall is seen.
 */
const STALL_RETRIES = 3;
const judgeAfterPendingIo = (judge: () => void) => afterPendingIo(judge, STALL_RETRIES);
const onQuiet = () => judgeAfterPendingIo(quietVerdict);
const quietVerdict = () => {
  quietRecheck = null;
  if (lost || quiet) return;
  const short = cfg.quietMs - (performance.now() - lastHeard);
  if (short > 0) {
    quietRecheck = setTimeout(onQuiet, Math.ceil(short));
    return;
  }
  quiet = true;
  port.postMessage({
    type: 'peer-quiet',
    silentMs: Math.round(performance.now() - lastHeard),
    heardAt: performance.timeOrigin + lastHeard,
  } satisfies FromWorker);
};
let lastPeer = '';
let drops: Record<string, number> = {};
let heard: Record<string, number> = {};
let sinceHeard: SilenceEvidence = { drops: {}, duplicates: 0, maxTickGapMs: 0 };
const dropped = (reason: string) => {
  drops[reason] = (drops[reason] ?? 0) + 1;
  sinceHeard.drops[reason] = (sinceHeard.drops[reason] ?? 0) + 1;
};

// A large receive buffer, so a burst of junk does not push the real beats out (the kernel caps
// it at net.core.rmem_max); the stream is the second path when it does anyway.
const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
const send = () => {
  beat = (beat + 1) >>> 0;
  const b = encodeHeartbeat(keys[0] as Buffer, {
    ordinal: cfg.ordinal,
    role: me.role,
    serverUp: me.serverUp,
    term: me.term,
    incarnation,
    echo: freshness.echo(),
    beat,
    appliedSeq: me.appliedSeq,
    heardAgo: everHeard ? Math.min(HEARD_NEVER - 1, Math.round(performance.now() - lastHeard)) : HEARD_NEVER,
  });
  try {
    if (connectedTo !== null) sock.send(b);
    else sock.send(b, cfg.peerPort, peerAddress);
  } catch {
    dropped('send-failed'); // between connects; the next tick sends again
  }
  port.postMessage({ type: 'beat-out', bytes: b } satisfies FromWorker);
};

// Where our beats go; the main thread moves it when the peer's name resolves elsewhere.
let peerAddress = cfg.peerAddress;
/**
 * The socket is connected to the peer: the kernel then delivers only the
 * peer's datagrams, so a flood from any other address costs this thread
 * nothing (it used to be decoded and HMAC-checked one by one, and a saturated
 * worker sent its own beats late: a false takeover). A flood that forges the
 * peer's address is still judged by key. A peer that moved is heard on the
 * stream, or found again by name while silent (HaNode.reresolvePeer), and the
 * socket is connected to its new address.
 */
let connectedTo: string | null = null;
let connecting = false;
const connectToPeer = () => {
  if (connecting || connectedTo === peerAddress) return; // a connect under way looks again when it ends
  if (connectedTo !== null) {
    sock.disconnect();
    connectedTo = null;
  }
  const target = peerAddress;
  connecting = true;
  try {
    sock.connect(cfg.peerPort, target, (err?: Error) => {
      connecting = false;
      if (err) return dropped('connect-failed'); // unconnected: beats go by address, any sender is judged
      connectedTo = target;
      if (target !== peerAddress) connectToPeer(); // moved again meanwhile
    });
  } catch {
    connecting = false;
    dropped('connect-failed');
  }
};

// The peer is known by the pair's key: a rescheduled pod has a new address, heard on the
// stream (and the socket is connected to it once its name resolves there).
const onBeat = (b: Buffer, from: string, path: 'udp' | 'stream') => {
  let hb = decodeHeartbeat(keys[0] as Buffer, b);
  for (let i = 1; hb === 'hmac' && i < keys.length; i++) hb = decodeHeartbeat(keys[i] as Buffer, b);
  if (hb === 'hmac') keyMisfits++;
  if (typeof hb === 'string') return dropped(hb);
  if (hb.ordinal === cfg.ordinal) return dropped('same-ordinal');
  // Replays (of this start or an earlier one) and reordering do not count; the same beat
  // by the other path is no news.
  const stale = freshness.judge(hb, lost);
  if (stale === 'duplicate') {
    sinceHeard.duplicates++;
    return;
  }
  if (stale !== null) return dropped(stale === 'unechoed' ? 'unechoed' : 'stale');
  heard[path] = (heard[path] ?? 0) + 1;
  lastHeard = performance.now();
  everHeard = true;
  sinceHeard = { drops: {}, duplicates: 0, maxTickGapMs: 0 };
  // Its own timer, not the tick: said exactly quietMs after the last beat, which is what
  // gives the master its head start over the peer's claim (decision 0005).
  if (quietTimer) quietTimer.refresh();
  else quietTimer = setTimeout(onQuiet, cfg.quietMs);
  if (quietRecheck) {
    clearTimeout(quietRecheck);
    quietRecheck = null;
  }
  const view = `${hb.role}|${hb.term}|${hb.serverUp}|${from}`;
  // The peer's view of us. Our beats may be lost one way on both paths while its reach us:
  // it will count us lost and claim the witness, and a master that holds no lease (its
  // peer is heard) would let it take over beside it (CI, session 13: two masters for 63 ms).
  // So being unheard is told as a quiet peer: a master claims ahead of the peer, as in a cut
  // both ways. A peer that just started and has not heard us yet is no such threat.
  const unheardNow = hb.heardAgo >= cfg.unheardMs && !(hb.heardAgo === HEARD_NEVER && hb.role === 'starting');
  let told = false;
  if (lost || quiet || view !== lastPeer || (unheardSince !== null && !unheardNow)) {
    lost = false;
    quiet = false;
    lastPeer = view;
    told = true;
    port.postMessage({
      type: 'peer',
      role: hb.role,
      term: hb.term,
      serverUp: hb.serverUp,
      appliedSeq: hb.appliedSeq,
      from,
    } satisfies FromWorker);
  }
  // Said again after a 'peer' (which ends a quiet spell on the main thread) while it lasts,
  // and when a later beat dates it earlier (the first may have waited in a queue): the
  // master's deadline counts from the earliest.
  const heardAt = performance.timeOrigin + lastHeard - hb.heardAgo;
  if (!unheardNow) unheardSince = null;
  else if (unheardSince === null || told || heardAt < unheardSince - 1) {
    unheardSince = heardAt;
    port.postMessage({ type: 'peer-quiet', silentMs: hb.heardAgo, heardAt, unheard: true } satisfies FromWorker);
  }
};

// The peer is known by the pair's key, not by its address: a rescheduled pod
// has a new one, and an address allowlist would make it a stranger for good.
sock.on('message', (b, rinfo) => onBeat(b, rinfo.address, 'udp'));

/** The 'stall' test hook (ToWorker). */
const stall = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};
let stallAfterTick = 0;
/** A message to ourselves is read in the poll phase that follows the timers phase we are in. */
const stallInNextPoll = (ms: number) => {
  const self = new MessageChannel();
  self.port2.once('message', () => {
    stall(ms);
    self.port2.close();
  });
  self.port1.postMessage(null);
};

let mainAliveAt = performance.now();
let mainHung = false;

port.on('message', (m: ToWorker) => {
  mainAliveAt = performance.now();
  if (m.type === 'stop') {
    clearInterval(tick);
    if (quietTimer) clearTimeout(quietTimer);
    if (quietRecheck) clearTimeout(quietRecheck);
    sock.close();
    return;
  }
  if (m.type === 'alive') return;
  if (m.type === 'peer-address') {
    peerAddress = m.address;
    connectToPeer();
    return;
  }
  if (m.type === 'keys') {
    keys = m.keys.map((k) => Buffer.from(k));
    return;
  }
  if (m.type === 'stall') {
    if (m.at === 'after-tick') stallAfterTick = m.ms;
    else stall(m.ms);
    return;
  }
  if (m.type === 'beat-in') {
    onBeat(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength), m.from, 'stream');
    return;
  }
  me = m;
  if (m.urgent) send(); // a role change or a dead server is told at once, not at the next beat
});

const deadline = cfg.intervalMs * cfg.misses;
// Key mismatch: beats that fit no key, per tick, over the last 2 x misses ticks. A peer
// with another key sends one per interval; `misses` of them with no valid beat is the verdict.
let keyMisfits = 0;
const misfitWindow: number[] = [];
let mismatch = false;
const judgeKeys = () => {
  const misfits = misfitWindow.reduce((a, b) => a + b, 0);
  // One short of `misses`: at the tick the peer counts as lost, its last misfit may not be in yet.
  const now = lost && misfits >= Math.max(2, cfg.misses - 1);
  if (now !== mismatch) {
    mismatch = now;
    port.postMessage({ type: 'peer-key', mismatch } satisfies FromWorker);
  }
};
let lastTickAt = performance.now();
let tickGaps: number[] = [];
const tick = setInterval(() => {
  const tickAt = performance.now();
  tickGaps.push(tickAt - lastTickAt);
  sinceHeard.maxTickGapMs = Math.max(sinceHeard.maxTickGapMs, Math.round(tickAt - lastTickAt));
  lastTickAt = tickAt;
  misfitWindow.push(keyMisfits);
  keyMisfits = 0;
  if (misfitWindow.length > 2 * cfg.misses) misfitWindow.shift();
  const mainSilent = performance.now() - mainAliveAt;
  if (mainSilent > cfg.mainHungMs) {
    if (!mainHung) port.postMessage({ type: 'main-hung', silentMs: Math.round(mainSilent) } satisfies FromWorker);
    mainHung = true;
  } else {
    mainHung = false;
    // The peer's beat is overdue: it may wait unread in the socket (this thread was not
    // scheduled, or its tick fell just before the read), and ours would tell the peer we had
    // not heard it, so a master would claim the witness for nothing. Such a beat goes once
    // the socket is read: a poll later (a few more if this thread is stalled). On time, at once.
    if (!lost && performance.now() - lastHeard >= cfg.intervalMs) judgeAfterPendingIo(send);
    else send();
  }
  port.postMessage({ type: 'counts', drops, heard, tickGapsMs: tickGaps } satisfies FromWorker);
  drops = {};
  heard = {};
  tickGaps = [];
  judgeAfterPendingIo(lossVerdict);
  if (stallAfterTick > 0) {
    stallInNextPoll(stallAfterTick);
    stallAfterTick = 0;
  }
}, cfg.intervalMs);

const lossVerdict = () => {
  const silent = performance.now() - lastHeard;
  if (!lost && silent > deadline) {
    lost = true;
    unheardSince = null;
    lastPeer = '';
    // A mismatch is said before the loss: a peer heard with another key is not a dead peer.
    judgeKeys();
    port.postMessage({
      type: 'peer-lost',
      silentMs: Math.round(silent),
      heardAt: performance.timeOrigin + lastHeard,
      sinceHeard,
    } satisfies FromWorker);
  } else judgeKeys();
};

// A connected UDP socket hears the kernel's ICMP errors (the peer's port closed: it is down or
// restarting): not news, the beats' silence says it. Without a listener they would end the thread.
sock.on('error', (err: NodeJS.ErrnoException) => dropped(`socket-${(err.code ?? 'error').toLowerCase()}`));
sock.bind(cfg.port, cfg.bindAddress, () => {
  connectToPeer();
  port.postMessage({ type: 'ready' } satisfies FromWorker);
});
