/**
 * Replication of every inbound message, master -> backup, over one ordered,
 * authenticated TCP connection (contract/wire.ts). The backup writes each
 * payload to its own server on the same link connection the master used,
 * byte for byte, so both servers see the same messages in the same order per
 * dialog; it acks the highest sequence it has applied.
 *
 * Sync mode: egress the master's server produced after message N is held
 * until the backup acked N (`SyncBarrier`), so no client is told "OK" about
 * state the backup lacks. The backup acks only what it wrote to a live
 * connection to its server; if it cannot, it closes the stream instead.
 * An ack that does not come within the deadline (a stalled stream: MTU black
 * hole, firewall, frozen backup) ends the stream: held traffic is released,
 * the backup is out of sync, and the next connection starts with a full
 * state burst.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import {
  encodeAck,
  encodeBeat,
  encodeChallenge,
  encodeData,
  encodeHello,
  encodeSynced,
  FrameReader,
  FrameType,
  NONCE,
  sessionKey,
} from '../../../contract/wire.ts';
import type { Logger } from '../log.ts';
import { writeInTurn } from '../proxy/turn-writer.ts';
import { FlapLog } from './flap-log.ts';
import { acceptedKeys, type Keyring } from './keyring.ts';

/** Send->ack times of the most recent frames (a ring: no allocation per message). */
export class LagWindow {
  private readonly sentAt: Float64Array;
  private readonly lags: Float64Array;
  private n = 0;
  readonly now: () => number;
  constructor(size = 8192, now: () => number = () => performance.now()) {
    this.sentAt = new Float64Array(size);
    this.lags = new Float64Array(size);
    this.now = now;
  }
  /** Called with each acked message's lag (ms), e.g. to feed a histogram. */
  onLag: (ms: number) => void = () => {};
  sent(seq: number): void {
    this.sentAt[seq % this.sentAt.length] = this.now();
  }
  /** When `seq` was sent (valid while fewer than the window's size are outstanding). */
  sentTime(seq: number): number {
    return this.sentAt[seq % this.sentAt.length] as number;
  }
  get size(): number {
    return this.sentAt.length;
  }
  acked(from: number, to: number): void {
    const now = this.now();
    for (let s = Math.max(from, to - this.sentAt.length + 1); s <= to; s++) {
      const lag = now - (this.sentAt[s % this.sentAt.length] as number);
      this.lags[this.n++ % this.lags.length] = lag;
      this.onLag(lag);
    }
  }
  /** Percentile (ms) over the window, NaN when empty. */
  percentile(p: number): number {
    return this.percentiles([p])[0] as number;
  }
  /** Several percentiles (ms) from one sort of the window; NaN when empty. */
  percentiles(ps: readonly number[]): number[] {
    const k = Math.min(this.n, this.lags.length);
    if (k === 0) return ps.map(() => Number.NaN);
    // A typed copy sorts numerically in place: no 8192 boxed numbers per scrape
    // (the Array.from version was the master's largest allocation site).
    const a = this.lags.slice(0, k).sort();
    return ps.map((p) => a[Math.min(k - 1, Math.ceil((p / 100) * k) - 1)] as number);
  }
}

export interface SenderOptions {
  /**
   * An ack older than this makes the backup "slow": held egress is released and no longer
   * held, until its acks are timely again; no ack at all for SLOW_STALL_DEADLINES of these
   * ends the stream (the backup resyncs).
   */
  ackDeadlineMs: number;
  /** A connection attempt that takes longer is abandoned and retried. */
  connectTimeoutMs?: number;
}

/**
 * A state burst leaves in slices of this many frames, one slice per event-loop
 * turn, with at most BURST_WINDOW of them unacknowledged. Queued in one turn,
 * 100,000 registrations (50 MB of frames, an HMAC each, one concat) held the
 * master's main thread over a second on a busy machine: its heartbeat worker
 * judged it hung, and the restarted, still empty backup took over.
 */
const BURST_SLICE = 512;
const BURST_WINDOW = 8192;
/**
 * A slow backup (acks late, but acking) keeps its stream; one that acks nothing for this many
 * ack deadlines is stuck (a black hole, a frozen process), and the stream restarts. Restarting
 * a slow one sent it the whole state again each time: more work for a server already behind
 * (the soak, session 21: 28 bursts in 40 s after a hand-back, 185 calls lost).
 */
const SLOW_STALL_DEADLINES = 4;

/** A state burst on its way: where its frames come from, and the live messages that wait behind it. */
interface Burst {
  readonly source: Iterator<{ link: number; bytes: Buffer }>;
  readonly backlog: Array<{ link: number; slices: Buffer[] }>;
  readonly done: (messages: number) => void;
  messages: number;
  /** A pump is scheduled (setImmediate) or running. */
  scheduled: boolean;
}

export class ReplicationSender {
  seq = 0;
  acked = 0;
  term = 0;
  readonly lag = new LagWindow();
  private socket: net.Socket | null = null;
  private connected = false;
  private stopped = true;
  /** The last message of the state burst on this stream (-1: not announced yet; 0: an empty burst). */
  private syncedSeq = -1;
  private watchdog: NodeJS.Timeout | null = null;
  /** The reconnect after a stream closed (cleared by stop(): a start() after it connects at once). */
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** When the backup last acked something new (or the stream came up): how the burst is watched. */
  private lastProgressAt = 0;
  /** In sync but acking later than the deadline: egress is not held for it (its acks are no guarantee). */
  private slow = false;
  /** Slow and timely again, said at most every 10 s (a backup at the deadline's edge flaps). */
  private readonly slowLog: FlapLog;
  /** The pair's keys, read at each handshake (a rotation changes them in place: HaNode.setKeys). */
  keys: Keyring;
  private readonly opts: Required<SenderOptions>;
  private readonly ordinal: 0 | 1;
  private readonly log: Logger;
  peer: { host: string; port: number };
  onAck: (seq: number) => void = () => {};
  onConnected: (up: boolean) => void = () => {};
  /** The stream was ended because the backup stopped acknowledging (the reason is a metric label). */
  onStall: (reason: string) => void = () => {};
  /** The backup became slow (acks past the deadline: held egress must go) or timely again. */
  onSlow: (slow: boolean) => void = () => {};
  /** A heartbeat the backup sent on the stream (the second path; the worker judges it). */
  onBeat: (heartbeat: Buffer, from: string) => void = () => {};
  /** The peer's handshake was signed with a key this side does not hold (a key mismatch, decision 0012). */
  onKeyMismatch: (from: string) => void = () => {};
  /** The current stream's key (sessionKey of both nonces); frames out of it are tagged with it. */
  private session: Buffer = Buffer.alloc(0);
  /** The state burst being sent on the current stream, if any. */
  private burst: Burst | null = null;

  constructor(keys: Keyring, peer: { host: string; port: number }, ordinal: 0 | 1, log: Logger, opts: SenderOptions) {
    this.keys = keys;
    this.peer = peer;
    this.ordinal = ordinal;
    this.log = log;
    this.opts = { connectTimeoutMs: 1000, ...opts };
    this.slowLog = new FlapLog(false, (slow, changesUnsaid) => {
      const said = changesUnsaid > 0 ? { changesUnsaid } : {};
      if (slow)
        this.log.warn({ ackDeadlineMs: this.opts.ackDeadlineMs, ...said }, 'the backup acks late: egress no longer waits for it');
      else this.log.info(said, 'the backup acks in time again');
    });
  }

  get isConnected(): boolean {
    return this.connected;
  }

  /** The backup acks later than the deadline (see checkAcks): nothing waits for its acks. */
  get isSlow(): boolean {
    return this.slow;
  }

  /** The backup has applied the full state burst of this stream and everything since. */
  get inSync(): boolean {
    return this.connected && this.syncedSeq >= 0 && this.acked >= this.syncedSeq && !this.slow;
  }

  /** Our heartbeat, on the stream too (the backup's worker hears it even when UDP beats are lost). */
  sendBeat(heartbeat: Uint8Array): void {
    if (this.connected && this.socket !== null) writeInTurn(this.socket, [encodeBeat(this.session, heartbeat)]);
  }

  /** Marks the end of the state burst: once acked, the backup is in sync. */
  synced(): void {
    if (!this.connected || this.socket === null) return;
    this.syncedSeq = this.seq;
    // The burst was queued in one turn (100k frames: a noticeable while); the backup's time starts now.
    this.lastProgressAt = this.lag.now();
    writeInTurn(this.socket, [encodeSynced(this.session, this.syncedSeq)]);
  }

  /** Ends the current stream (it reconnects unless stopped). */
  restart(reason: string): void {
    this.log.warn({ reason, seq: this.seq, acked: this.acked }, 'replication stream restarted');
    this.socket?.destroy();
  }

  /**
   * A stalled stream. Until the backup acked the state burst, it works through
   * it at its server's pace (100k registrations take seconds, far more than the
   * deadline and the window): stalled is then no new ack for SLOW_STALL_DEADLINES
   * deadlines (one restarted a slow backup's burst over and over). In
   * sync: no new ack for SLOW_STALL_DEADLINES deadlines, or too many outstanding;
   * an oldest unacknowledged message older than the deadline only makes the
   * backup slow (setSlow). (Judged by age alone, a burst larger than the window or
   * longer than the deadline was restarted for ever, and the backup never got in sync.)
   */
  private checkAcks(): void {
    if (!this.connected) return;
    const deadline = this.opts.ackDeadlineMs;
    if (this.seq === this.acked) {
      this.setSlow(false); // caught up
      return;
    }
    const now = this.lag.now();
    // Taking its burst or in sync, only a backup that acks nothing at all is stuck (nothing is held
    // for one taking its burst; in sync, one acking late is only slow).
    const taking = this.syncedSeq < 0 || this.acked < this.syncedSeq;
    let reason: string | null = null;
    if (!taking && this.seq - this.acked >= this.lag.size) reason = 'ack-window-full';
    else if (now - this.lastProgressAt > SLOW_STALL_DEADLINES * deadline) reason = 'ack-deadline';
    else if (!taking) {
      // Slow past the deadline, timely again below half of it (no flapping at the edge).
      const oldest = now - this.lag.sentTime(this.acked + 1);
      if (oldest > deadline) this.setSlow(true);
      else if (oldest <= deadline / 2) this.setSlow(false);
    }
    if (reason === null) return;
    this.onStall(reason);
    this.restart(reason);
  }

  private setSlow(slow: boolean): void {
    if (this.slow === slow) return;
    this.slow = slow;
    this.slowLog.set(slow);
    this.onSlow(slow);
  }

  start(term: number): void {
    this.term = term;
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const s = this.socket;
    this.socket = null; // its close event is then ignored: a later start() owns the next socket
    this.burst = null;
    s?.destroy();
    if (this.connected) {
      this.connected = false;
      this.onConnected(false);
    }
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  /**
   * Sends one inbound message; returns its sequence number (0 when no backup is
   * connected, or when it waits behind the state burst: it follows it in order).
   */
  replicate(link: number, slices: Buffer[]): number {
    if (!this.connected || this.socket === null) return 0;
    if (this.burst !== null) {
      this.burst.backlog.push({ link, slices: slices.slice() });
      return 0;
    }
    return this.send(this.socket, link, slices);
  }

  /** A burst is being sent: live messages wait behind it. */
  get bursting(): boolean {
    return this.burst !== null;
  }

  /**
   * Sends the state burst for the stream that just came up: every frame of
   * `source` (read lazily: what it yields is read when the frame leaves), a
   * slice per event-loop turn, at most BURST_WINDOW unacknowledged, then the
   * Synced mark and the live messages replicated meanwhile, in order. `done`
   * is told how many it sent; a stream that ends first abandons it (the next
   * stream starts with a burst of its own).
   */
  sendBurst(source: Iterator<{ link: number; bytes: Buffer }>, done: (messages: number) => void = () => {}): void {
    if (!this.connected || this.socket === null) return;
    this.burst = { source, backlog: [], done, messages: 0, scheduled: true };
    this.pump(this.burst);
  }

  private pump(b: Burst): void {
    b.scheduled = false;
    const socket = this.socket;
    if (this.burst !== b || socket === null || !this.connected) return; // the stream ended
    for (let n = 0; n < BURST_SLICE; n++) {
      if (this.seq - this.acked >= BURST_WINDOW) return; // an ack resumes it
      const next = b.source.next();
      if (next.done === true) {
        this.burst = null;
        this.synced();
        for (const m of b.backlog) this.send(socket, m.link, m.slices);
        b.done(b.messages);
        return;
      }
      this.send(socket, next.value.link, [next.value.bytes]);
      b.messages++;
    }
    this.schedulePump(b);
  }

  private schedulePump(b: Burst): void {
    if (b.scheduled) return;
    b.scheduled = true;
    setImmediate(() => this.pump(b));
  }

  private send(socket: net.Socket, link: number, slices: Buffer[]): number {
    if (this.seq === this.acked) this.lastProgressAt = this.lag.now(); // the wait for an ack starts here
    this.seq++;
    this.lag.sent(this.seq);
    writeInTurn(socket, encodeData(this.session, this.seq, this.term, link, slices));
    return this.seq;
  }

  private connect(): void {
    // One connection at a time: a reconnect that was pending when stop() and start() came
    // (a role flapping) used to open a second one, and live frames encoded for one went
    // out on the other before its handshake (the soak's "key this side does not hold").
    if (this.stopped || this.socket !== null) return;
    if (this.watchdog === null) {
      this.watchdog = setInterval(() => this.checkAcks(), Math.max(5, this.opts.ackDeadlineMs / 4));
      this.watchdog.unref();
    }
    const s = net.connect({ host: this.peer.host, port: this.peer.port, noDelay: true });
    this.socket = s;
    // A SYN into a black hole would otherwise wait for the kernel's ~2 min of retries.
    const connectTimer = setTimeout(() => s.destroy(), this.opts.connectTimeoutMs);
    connectTimer.unref();
    // The backup speaks first (a fresh challenge); our HELLO echoes it and adds our
    // nonce; from then on both sides tag frames with the session's key.
    let live = false;
    const [key, ...also] = acceptedKeys(this.keys);
    const reader = new FrameReader(
      key as Buffer,
      (f) => {
        if (!live) {
          if (f.type !== FrameType.Challenge || this.socket !== s) {
            s.destroy();
            return;
          }
          clearTimeout(connectTimer);
          const nonceS = randomBytes(NONCE);
          // Answered under the key the challenge came with: in a rotation, the one both hold.
          const pairKey = reader.key;
          s.write(encodeHello(pairKey, this.ordinal, this.term, 0, f.nonceR, nonceS));
          this.session = sessionKey(pairKey, f.nonceR, nonceS);
          reader.key = this.session;
          reader.alsoKeys = [];
          live = true;
          // A new stream starts its own numbering: the backup acks what it applied of this one.
          this.seq = 0;
          this.acked = 0;
          this.syncedSeq = -1;
          this.burst = null;
          this.lastProgressAt = this.lag.now();
          this.slow = false;
          this.slowLog.reset(false); // said with the line below: a new stream starts timely
          this.connected = true;
          this.log.info({ peer: this.peer }, 'replicating to the backup');
          this.onConnected(true);
          return;
        }
        if (f.type === FrameType.Beat) {
          this.onBeat(f.heartbeat, this.peer.host);
          return;
        }
        if (f.type === FrameType.Ack && f.seq > this.acked) {
          this.lastProgressAt = this.lag.now();
          this.lag.acked(this.acked + 1, f.seq);
          this.acked = f.seq;
          this.onAck(f.seq);
          if (this.burst !== null) this.schedulePump(this.burst);
        }
      },
      also,
    );
    s.on('data', (chunk: Buffer) => {
      const bad = reader.push(chunk);
      if (bad) {
        this.log.error({ reason: bad }, 'bad frame from the backup; reconnecting');
        if (bad === 'hmac' && !live) this.onKeyMismatch(this.peer.host);
        s.destroy();
      }
    });
    s.on('error', (err) => this.log.debug({ err: err.message }, 'replication connection error'));
    s.on('close', () => {
      clearTimeout(connectTimer);
      if (this.socket !== s) return; // stopped, and maybe started again since
      this.socket = null;
      this.burst = null;
      const was = this.connected;
      this.connected = false;
      if (was) {
        this.log.warn('replication connection closed');
        this.onConnected(false);
      }
      if (!this.stopped) {
        this.reconnectTimer = setTimeout(() => {
          this.reconnectTimer = null;
          this.connect();
        }, 100);
        this.reconnectTimer.unref();
      }
    });
  }
}

/** Holds egress until the backup acked what the master's server had seen when it produced it. */
export class SyncBarrier {
  // Sent entries are cleared at once: each holds a parsed message, and keeping
  // a thousand of them until the next compaction made them survive V8's young-
  // generation GCs (about 1.5 MB copied per scavenge at 500 calls/s).
  private readonly queue: Array<{ need: number; send: () => void } | undefined> = [];
  private head = 0;
  private readonly sender: ReplicationSender;

  constructor(sender: ReplicationSender) {
    this.sender = sender;
    sender.onAck = () => this.flush();
    // Without a backup there is nothing to wait for (and waiting would stall the master).
    sender.onConnected = (up) => {
      if (!up) this.flush(true);
    };
    // Nor for one acking past the deadline (what it holds is no guarantee until it catches up).
    sender.onSlow = (slow) => {
      if (slow) this.flush(true);
    };
  }

  hold(send: () => void): void {
    const need = this.sender.seq;
    if (!this.sender.isConnected || this.sender.isSlow || this.sender.acked >= need) {
      send();
      return;
    }
    this.queue.push({ need, send });
  }

  get waiting(): number {
    return this.queue.length - this.head;
  }

  flush(all = false): void {
    const acked = this.sender.acked;
    while (this.head < this.queue.length) {
      const e = this.queue[this.head] as { need: number; send: () => void };
      if (!all && e.need > acked) break;
      this.queue[this.head++] = undefined;
      e.send();
    }
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}

/**
 * The backup's end: accepts the master's stream, applies each message, acks.
 * The peer is known by the pair's key, not by its address (a rescheduled pod
 * has a new one): a connection becomes the stream only after a valid HELLO,
 * so a stranger's connection cannot end the live stream.
 */
/** A backup acks at least this often within one long run of frames (a state burst). */
const ACK_EVERY = 1024;

export class ReplicationReceiver {
  applied = 0;
  private readonly server: net.Server;
  private current: net.Socket | null = null;
  /** Last message of the master's state burst on the current stream (-1: not announced yet). */
  private syncedSeq = -1;
  /** The pair's keys, read at each handshake (a rotation changes them in place: HaNode.setKeys). */
  keys: Keyring;
  private readonly log: Logger;
  /**
   * Writes the payload to the local server on link connection `link`; false
   * when it cannot (the server is down or restarting): nothing is acked then.
   */
  apply: (link: number, payload: Buffer) => boolean = () => true;
  /** False while this node must not apply (it is master itself). */
  accepting: () => boolean = () => true;
  /** A heartbeat the master sent on the stream (the second path; the worker judges it). */
  onBeat: (heartbeat: Buffer, from: string) => void = () => {};
  /** The peer's handshake was signed with a key this side does not hold (a key mismatch, decision 0012). */
  onKeyMismatch: (from: string) => void = () => {};
  private session: Buffer = Buffer.alloc(0);
  /** The master sends Beat frames on the current stream (so it reads ours too). */
  private peerBeats = false;

  constructor(keys: Keyring, log: Logger) {
    this.keys = keys;
    this.log = log;
    this.server = net.createServer({ noDelay: true }, (s) => this.adopt(s));
  }

  /** This node's server holds the master's full state: the burst and everything since were applied. */
  get inSync(): boolean {
    return this.current !== null && this.syncedSeq >= 0 && this.applied >= this.syncedSeq;
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ port, host }, () => {
        this.server.off('error', reject);
        this.server.on('error', (err) => this.log.error({ err }, 'replication listener error'));
        resolve();
      });
    });
  }

  close(): void {
    this.server.close();
    this.current?.destroy();
  }

  /**
   * Our heartbeat, on the live stream too (the master's worker hears it even
   * when UDP beats are lost), once the master sent one on this stream: a master
   * from before Beat frames reads an unknown frame type as a broken stream, and
   * in a rolling upgrade the backup is the new one first.
   */
  sendBeat(heartbeat: Uint8Array): void {
    if (this.current !== null && !this.current.destroyed && this.peerBeats)
      this.current.write(encodeBeat(this.session, heartbeat));
  }

  /** Ends the live stream (the master reconnects and resyncs this node with a burst). */
  drop(reason: string): void {
    if (this.current === null) return;
    this.log.warn({ reason, applied: this.applied }, 'replication stream dropped; the master will resync');
    this.current.destroy();
    this.current = null;
    this.syncedSeq = -1;
  }

  private adopt(s: net.Socket): void {
    const from = (s.remoteAddress ?? '').replace(/^::ffff:/, '');
    s.on('error', () => {});
    // Until its HELLO checks out, a connection is nobody's stream; bounded in time.
    const helloTimer = setTimeout(() => s.destroy(), 2000);
    helloTimer.unref();
    let live = false;
    let pendingAck = false;
    let ackedSent = 0;
    const [key, ...also] = acceptedKeys(this.keys) as [Buffer, ...Buffer[]];
    let session = key;
    const ack = () => {
      pendingAck = false;
      ackedSent = this.applied;
      if (!s.destroyed) s.write(encodeAck(session, this.applied));
    };
    // A fresh challenge: a HELLO (and every frame after it) recorded from another stream does not fit.
    const nonceR = randomBytes(NONCE);
    s.write(encodeChallenge(key, nonceR));
    const reader = new FrameReader(
      key,
      (f) => {
        if (!live) {
          if (f.type !== FrameType.Hello || !f.nonceR.equals(nonceR)) {
            this.log.warn({ from, frame: f.type }, 'replication connection without a fresh HELLO; closing');
            s.destroy();
            return;
          }
          clearTimeout(helloTimer);
          session = sessionKey(reader.key, nonceR, f.nonceS);
          reader.key = session;
          reader.alsoKeys = [];
          live = true;
          this.current?.destroy(); // one stream at a time: the newest authenticated one
          this.current = s;
          this.session = session;
          this.peerBeats = false;
          this.applied = 0;
          this.syncedSeq = -1;
          this.log.info({ from, term: f.term }, 'replication stream from the master');
          return;
        }
        if (f.type === FrameType.Synced) {
          this.syncedSeq = f.seq;
          return;
        }
        if (f.type === FrameType.Beat) {
          if (this.current !== s) return;
          this.peerBeats = true;
          this.onBeat(f.heartbeat, from);
          return;
        }
        if (f.type !== FrameType.Data) return;
        if (f.seq <= this.applied || !this.accepting()) return;
        if (!this.apply(f.link, f.payload)) {
          // Never ack what the server did not get: end the stream; the master resyncs us later.
          this.drop('server-unavailable');
          return;
        }
        this.applied = f.seq;
        if (this.applied - ackedSent >= ACK_EVERY) {
          // Deep in a long run of frames (a state burst read in one go): say how far we are now,
          // so the master sees progress rather than a stall.
          ack();
        } else if (!pendingAck) {
          // One ack per burst of frames read together.
          pendingAck = true;
          setImmediate(ack);
        }
      },
      also,
    );
    s.on('data', (chunk: Buffer) => {
      const bad = reader.push(chunk);
      if (bad) {
        this.log.error({ reason: bad, from }, 'bad replication frame; closing');
        if (bad === 'hmac' && !live) this.onKeyMismatch(from);
        s.destroy();
      }
    });
    s.on('close', () => {
      clearTimeout(helloTimer);
      if (this.current === s) {
        this.current = null;
        this.syncedSeq = -1;
      }
    });
  }
}
