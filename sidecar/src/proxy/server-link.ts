/**
 * The link to the local SIP server: a few persistent loopback TCP
 * connections. Kamailio answers a request on the connection it came in on
 * (its TCP lookup is by connection id), so every reply and every locally
 * generated response comes back here even though the server believes the
 * request came from the client's own address (see
 * docs/decisions/0002-edge-proxy-contract.md).
 *
 * A Call-ID always maps to the same connection, so one dialog's messages
 * reach the server in the order they arrived.
 *
 * One more connection carries only the hung-server probe (sendProbe): on a
 * traffic connection alone its OPTIONS waited behind everything written
 * before it (a state burst of 10,000 REGISTERs is seconds of work), and a
 * busy server was judged hung. The probe still goes on every traffic
 * connection too, judged with lastReadAt (server-probe.ts).
 */
import net from 'node:net';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { SipStreamFramer } from '../sip/framer.ts';
import { writeInTurn } from './turn-writer.ts';

export interface ServerLinkOptions {
  host: string;
  port: number;
  connections: number;
  maxMessageBytes: number;
  /** Messages held per connection while it (re)connects; beyond, drop. */
  maxQueued?: number;
  /**
   * Bytes written to a connection that the server has not read yet, past which
   * the connection is busy (`busy`): a server slower than its clients must not
   * grow our memory without bound.
   */
  maxBacklogBytes?: number;
}

interface Conn {
  socket: net.Socket | null;
  ready: boolean;
  queue: Buffer[][];
  retryMs: number;
  /** Called once the server has read the backlog (or the connection is gone). */
  waiters: Array<() => void>;
  /** When bytes last came from the server on it (performance.now() ms): the hung-server probe's sign of progress. */
  readAt: number;
}

export class ServerLink {
  /** The traffic connections, then the probe's. */
  private readonly conns: Conn[] = [];
  private readonly traffic: number;
  private closed = false;
  private readonly opts: Required<ServerLinkOptions>;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly onMessage: (bytes: Buffer) => void;
  /** Called when the server is seen to go away (a reconnect is refused) or to come back. */
  onServer: (up: boolean) => void = () => {};
  /**
   * Called when an established connection closes: the server may have
   * restarted (and lost its state) even if it is back before anyone sees a
   * refused reconnect.
   */
  onReset: (index: number) => void = () => {};
  private serverUp = false;

  constructor(opts: ServerLinkOptions, log: Logger, metrics: Metrics, onMessage: (bytes: Buffer) => void) {
    this.opts = { maxQueued: 10000, maxBacklogBytes: DEFAULT_LINK_BACKLOG, ...opts };
    this.log = log;
    this.metrics = metrics;
    this.onMessage = onMessage;
    this.traffic = opts.connections;
    for (let i = 0; i <= opts.connections; i++) {
      const c: Conn = { socket: null, ready: false, queue: [], retryMs: 0, waiters: [], readAt: performance.now() };
      this.conns.push(c);
      this.connect(c, i);
    }
  }

  /** True when every connection (the probe's too) is up. */
  get ready(): boolean {
    return this.conns.every((c) => c.ready);
  }

  /** The connection a Call-ID maps to (a dialog always uses the same one). */
  indexFor(callId: string): number {
    return hash(callId) % this.traffic;
  }

  /** The server has not read `maxBacklogBytes` written to connection `index`: take no more for it. */
  busy(index: number): boolean {
    const s = this.conn(index).socket;
    return s !== null && s.writableLength > this.opts.maxBacklogBytes;
  }

  /** Calls `then` once connection `index` has drained its backlog, or has closed. */
  whenDrained(index: number, then: () => void): void {
    const c = this.conn(index);
    if (c.socket === null) then();
    else c.waiters.push(then);
  }

  /** Sends one message (as slices) on the connection its Call-ID maps to. */
  send(callId: string, slices: Buffer[]): boolean {
    return this.sendOn(this.indexFor(callId), slices);
  }

  /** Sends on connection `index` (a replicated message goes where the master's went). */
  sendOn(index: number, slices: Buffer[]): boolean {
    return this.queueOrWrite(this.conn(index), slices);
  }

  /** The connections that carry traffic (the probe's own is not one of them). */
  get trafficConnections(): number {
    return this.traffic;
  }

  /** When the server last sent anything on traffic connection `index` (performance.now() ms). */
  lastReadAt(index: number): number {
    return this.conn(index).readAt;
  }

  /** Sends a probe on the connection that carries nothing else. */
  sendProbe(slices: Buffer[]): boolean {
    return this.queueOrWrite(this.conns[this.traffic] as Conn, slices);
  }

  /** Traffic connection `index` (a replicated index from a peer with more connections wraps). */
  private conn(index: number): Conn {
    return this.conns[index % this.traffic] as Conn;
  }

  private queueOrWrite(c: Conn, slices: Buffer[]): boolean {
    if (!c.ready || c.socket === null) {
      if (c.queue.length >= this.opts.maxQueued) return false;
      c.queue.push(slices);
      return true;
    }
    writeInTurn(c.socket, slices);
    return true;
  }

  /**
   * Writes on connection `index` only if it is up now (never queues): what a
   * backup acknowledges must have reached its server, not a queue that a
   * restarted server will never see in full.
   */
  writeNow(index: number, slices: Buffer[]): boolean {
    const c = this.conn(index);
    if (!c.ready || c.socket === null) return false;
    writeInTurn(c.socket, slices);
    return true;
  }

  private setServer(up: boolean): void {
    if (up === this.serverUp) return;
    this.serverUp = up;
    this.log.info({ up }, up ? 'SIP server is up' : 'SIP server is down');
    this.onServer(up);
  }

  close(): void {
    this.closed = true;
    for (const c of this.conns) c.socket?.destroy();
  }

  private connect(c: Conn, index: number): void {
    if (this.closed) return;
    const socket = net.connect({ host: this.opts.host, port: this.opts.port, noDelay: true });
    c.socket = socket;
    const framer = new SipStreamFramer(
      {
        message: (bytes) => this.onMessage(bytes),
        ping: () => {},
        error: (reason, detail) => {
          this.metrics.drop('from_server', reason);
          this.log.error({ reason, detail, index }, 'unframeable bytes from the SIP server; reconnecting');
          socket.destroy();
        },
      },
      this.opts.maxMessageBytes,
    );
    socket.on('connect', () => {
      c.ready = true;
      c.readAt = performance.now();
      c.retryMs = 0;
      this.metrics.linkUp.inc();
      this.log.info({ index }, 'link to the SIP server is up');
      for (const slices of c.queue) writeInTurn(socket, slices);
      c.queue = [];
      this.setServer(this.ready);
    });
    socket.on('data', (chunk: Buffer) => {
      c.readAt = performance.now();
      framer.push(chunk);
    });
    const release = () => {
      const waiting = c.waiters;
      c.waiters = [];
      for (const w of waiting) w();
    };
    socket.on('drain', release);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.log.debug({ err: err.message, index }, 'link error');
      // Nobody listens: the server is gone (a crash closes its sockets at once).
      if (err.code === 'ECONNREFUSED') this.setServer(false);
    });
    socket.on('close', () => {
      release();
      const was = c.ready;
      if (was) {
        this.metrics.linkUp.dec();
        this.log.warn({ index }, 'link to the SIP server closed');
      }
      c.ready = false;
      c.socket = null;
      if (was && !this.closed) this.onReset(index);
      if (this.closed) return;
      // First retry at once: a refused reconnect is how a dead server shows.
      const delay = c.retryMs;
      c.retryMs = c.retryMs === 0 ? 50 : Math.min(c.retryMs * 2, 1000);
      setTimeout(() => this.connect(c, index), delay).unref();
    });
  }
}

/** 8 MiB a connection: about 20,000 SIP messages the server has not read yet. */
export const DEFAULT_LINK_BACKLOG = 8 << 20;

/** FNV-1a over the Call-ID's UTF-16 code units; stable, cheap, well spread. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
