/**
 * TCP connections with SIP peers, both accepted (clients) and opened by the
 * sidecar (towards TCP targets), keyed by the peer's "ip:port". Every byte
 * read is framed into SIP messages and handed to `onMessage` with its flow.
 *
 * Bounded (issue 9 item 6), each limit counted as an inbound drop:
 * - at most `maxFlows` accepted connections (`tcp-flows-full`);
 * - per remote address, at most `maxFlowsPerAddress` of them
 *   (`tcp-address-full`), opened at most `acceptRatePerAddress` a second after
 *   a burst (`tcp-address-rate`): one address cannot take the whole table, nor
 *   churn connections faster than that. Judged at accept (address-table.ts),
 *   before a framer, a timer or a TLS handshake is spent; closed with a reset;
 * - a message must arrive whole within `headerTimeoutMs` of its first byte
 *   (or of the connection, for the first one): slowloris (`tcp-header-timeout`);
 * - a flow silent for `idleMs` is closed (`tcp-idle`);
 * - a peer that does not read what we write is cut off once `maxWriteBuffer`
 *   bytes wait for it (`tcp-write-backlog`), instead of growing our memory;
 * - a failed accept (EMFILE: out of file descriptors) is counted
 *   (`tcp-accept-failed`) and the listener lives on.
 * And paced: a client's connection that sends more than `flowRate` messages
 * a second is paused until it is back under it (flow-pacer.ts; counted in
 * sipha_tcp_flow_pauses_total, nothing dropped).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { SipStreamFramer } from '../sip/framer.ts';
import type { TlsCredentials, TlsSettings } from '../tls/credentials.ts';
import type { AddressRate } from './address-rate.ts';
import { type AddressEntry, AddressTable } from './address-table.ts';
import { destinationKey } from './destination.ts';
import { FlowPacer } from './flow-pacer.ts';
import { writeInTurn } from './turn-writer.ts';

export interface Flow {
  readonly transport: 'tcp' | 'tls';
  readonly socket: net.Socket;
  readonly address: string;
  readonly port: number;
  /** The AORs whose REGISTERs were accepted over this connection (EdgeProxy.ownedBy). */
  owners?: Set<string>;
}

/** A TCP or TLS destination: where a client's flow is. */
export interface StreamTarget {
  readonly transport: 'tcp' | 'tls';
  readonly host: string;
  readonly port: number;
}

/** Whose Contact a request goes to: its AOR, its client, the client's RFC 5626 instance. */
export interface FlowOwner {
  readonly aor: string;
  readonly id: string;
  /** Its +sip.instance: one device's lines share it, whatever their AORs. */
  readonly instance?: string;
}

export type FlowMessageHandler = (bytes: Buffer, flow: Flow) => void;

export interface TcpLimits {
  maxFlows: number;
  headerTimeoutMs: number;
  idleMs: number;
  maxWriteBuffer: number;
  /** Messages per second one client connection may send (a burst of one second's worth); 0: unpaced. */
  flowRate: number;
  /** Accepted connections one remote address may hold; 0: no cap. */
  maxFlowsPerAddress: number;
  /** New connections a second one remote address may open, after a burst of maxFlowsPerAddress; 0: no limit. */
  acceptRatePerAddress: number;
}

export const DEFAULT_TCP_LIMITS: TcpLimits = {
  maxFlows: 10_000,
  headerTimeoutMs: 10_000,
  // A registered phone's flow carries its incoming calls: keep it as long as a
  // REGISTER usually lasts (RFC 5626 keep-alives refresh it).
  idleMs: 3_600_000,
  maxWriteBuffer: 1 << 20,
  // A phone sends a few a second; a trunk's connection that needs more sets SIPHA_TCP_FLOW_RATE.
  flowRate: 1000,
  // An office NAT: a few hundred phones behind one address, two flows each with
  // RFC 5626 outbound, fit; a flooder is held to a tenth of maxFlows, so one
  // address cannot fill the table for everyone else.
  maxFlowsPerAddress: 1000,
  // A phone opens a connection when it starts, after a failover (all of a NAT's
  // phones at once: that is the burst, the per-address cap) and rarely in
  // between (a flow lasts as long as its registration); a flooder opens
  // thousands a second. A gateway that churns connections faster sets more.
  acceptRatePerAddress: 100,
};

/** Addresses remembered by the per-address limits: every one that can hold a flow, and as many recently refused. */
const addressesRemembered = (limits: TcpLimits) => Math.max(1024, 2 * limits.maxFlows);

const CRLF = Buffer.from('\r\n');

/** The certificates a TLS flow set serves, and what it checks next hops against. */
export interface FlowTls {
  readonly credentials: TlsCredentials;
  readonly settings: TlsSettings;
}

export class TcpFlows {
  private readonly flows = new Map<string, Flow>();
  private readonly addresses: AddressTable;
  private server: net.Server;
  private readonly bindAddress: string;
  private readonly maxBytes: number;
  private readonly limits: TcpLimits;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly onMessage: FlowMessageHandler;
  /**
   * The per-address request rate, shared with the other listeners (set by the
   * edge proxy): a connection whose address is past it pauses, as for its own rate.
   */
  requestRate: AddressRate | null = null;
  /** Set: this is the TLS flow set (RFC 3261 26: SIP over TLS, terminated here). */
  private readonly tls: FlowTls | null;
  readonly transport: 'tcp' | 'tls';

  constructor(
    bindAddress: string,
    maxBytes: number,
    log: Logger,
    metrics: Metrics,
    onMessage: FlowMessageHandler,
    limits: TcpLimits = DEFAULT_TCP_LIMITS,
    tlsConfig: FlowTls | null = null,
  ) {
    this.tls = tlsConfig;
    this.transport = tlsConfig ? 'tls' : 'tcp';
    this.bindAddress = bindAddress;
    this.maxBytes = maxBytes;
    this.limits = limits;
    this.log = log;
    this.metrics = metrics;
    this.onMessage = onMessage;
    this.addresses = new AddressTable({
      maxFlowsPerAddress: limits.maxFlowsPerAddress,
      acceptRatePerAddress: limits.acceptRatePerAddress,
      maxAddresses: addressesRemembered(limits),
    });
    this.server = this.createServer();
  }

  private createServer(): net.Server {
    const server = this.tls ? this.createTlsServer(this.tls) : net.createServer({ noDelay: true }, (s) => this.adopt(s));
    server.maxConnections = this.limits.maxFlows;
    server.on('drop', () => this.metrics.drop('inbound', 'tcp-flows-full'));
    this.admitFirst(server);
    // For good, not only while listening: a failed accept (EMFILE) is an 'error'
    // on the server, and an 'error' without a listener ends the process.
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (!server.listening) return; // listen() reports its own failure
      this.metrics.drop('inbound', 'tcp-accept-failed');
      this.log.warn({ err: err.message, code: err.code }, 'TCP accept failed');
    });
    return server;
  }

  /**
   * Puts the per-address check in front of whatever the server does with a new
   * connection (adopting it, or, for TLS, Node's own listener that starts the
   * handshake): a refused connection costs an accept and a reset, nothing more.
   */
  private admitFirst(server: net.Server): void {
    if (this.limits.maxFlowsPerAddress === 0 && this.limits.acceptRatePerAddress === 0) return;
    const next = server.listeners('connection') as Array<(socket: net.Socket) => void>;
    server.removeAllListeners('connection');
    server.on('connection', (socket: net.Socket) => {
      const entry = this.addresses.admit(normalise(socket.remoteAddress ?? ''));
      if (typeof entry === 'string') {
        this.metrics.drop('inbound', entry);
        socket.on('error', () => {}); // the reset may race a write of the client's
        socket.resetAndDestroy();
        return;
      }
      socket.once('close', () => this.addresses.release(entry as AddressEntry));
      for (const listener of next) listener.call(server, socket);
    });
  }

  /**
   * A handshake must end within the header timeout (a client that opens and
   * says nothing holds a slot, as slowloris does over TCP); one that fails is
   * counted, as is a client certificate the CA did not sign.
   */
  private createTlsServer({ credentials }: FlowTls): tls.Server {
    const server = tls.createServer(
      { ...credentials.serverOptions(), handshakeTimeout: this.limits.headerTimeoutMs, noDelay: true },
      (s) => {
        // A handshake that began before closePublic ends after it: this node no longer serves.
        if (server !== this.server || !server.listening) {
          s.destroy();
          return;
        }
        // clientAuth "optional": no certificate is fine; one that does not verify is not.
        if (!s.authorized && s.getPeerCertificate()?.subject !== undefined) {
          this.metrics.drop('inbound', 'tls-client-cert');
          this.log.info(
            { peer: `${s.remoteAddress}:${s.remotePort}`, why: s.authorizationError },
            'TLS client certificate refused',
          );
          s.destroy();
          return;
        }
        this.adopt(s);
      },
    );
    server.on('tlsClientError', (err: NodeJS.ErrnoException, s: tls.TLSSocket) => {
      // With a listener here Node leaves the connection open (a handshake that timed
      // out would hold its slot for good): close it.
      s.destroy();
      this.metrics.drop('inbound', 'tls-handshake-failed');
      this.log.debug({ peer: `${s.remoteAddress}:${s.remotePort}`, err: err.message }, 'TLS handshake failed');
    });
    return server;
  }

  /** The TLS server in use (the credentials swap its certificate when the files change). */
  get tlsServer(): tls.Server | null {
    return this.tls && this.server.listening ? (this.server as tls.Server) : null;
  }

  listen(port: number): Promise<void> {
    if (this.server.listening) this.server.close();
    this.server = this.createServer();
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.bindAddress, port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /**
   * Queues a message for a flow, unless the peer has left `maxWriteBuffer`
   * bytes unread: then the flow is closed (it would only grow our memory).
   */
  write(flow: Flow, slices: Buffer[]): boolean {
    if (flow.socket.writableLength > this.limits.maxWriteBuffer) {
      this.metrics.drop('egress', 'tcp-write-backlog');
      this.log.info({ peer: destinationKey(flow.address, flow.port) }, 'closing TCP flow: the peer does not read');
      flow.socket.destroy();
      return false;
    }
    writeInTurn(flow.socket, slices);
    return true;
  }

  get(host: string, port: number): Flow | undefined {
    return this.flows.get(destinationKey(host, port));
  }

  /** The open flow to host:port, or a new outbound connection from the public address. */
  getOrOpen(host: string, port: number): Flow {
    const existing = this.get(host, port);
    if (existing !== undefined) return existing;
    const localAddress = this.bindAddress === '0.0.0.0' ? undefined : this.bindAddress;
    const where = { host, port, noDelay: true, ...(localAddress ? { localAddress } : {}) };
    if (this.tls === null) return this.adopt(net.connect(where), host, port);
    // Writes wait for the handshake; a next hop whose certificate does not verify gets nothing.
    const socket = tls.connect({ ...where, ...this.tls.credentials.clientOptions(host) });
    let secured = false;
    socket.once('secureConnect', () => {
      secured = true;
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (secured) return;
      this.metrics.drop('egress', 'tls-connect-failed');
      this.log.warn({ peer: destinationKey(host, port), err: err.message, code: err.code }, 'TLS connection to next hop failed');
    });
    return this.adopt(socket, host, port);
  }

  close(): void {
    this.server.close();
    for (const f of this.flows.values()) f.socket.destroy();
  }

  private adopt(socket: net.Socket, host?: string, port?: number): Flow {
    const flow: Flow = {
      transport: this.transport,
      socket,
      address: host ?? normalise(socket.remoteAddress ?? ''),
      port: port ?? socket.remotePort ?? 0,
    };
    const key = destinationKey(flow.address, flow.port);
    this.flows.set(key, flow);
    this.metrics.flows.inc();
    // One timer per flow: the deadline of the message in progress, else the idle limit.
    let deadline: NodeJS.Timeout | null = null;
    const arm = (ms: number, reason: string) => {
      if (deadline) clearTimeout(deadline);
      deadline = setTimeout(() => {
        this.metrics.drop('inbound', reason);
        this.log.info({ peer: key, reason }, 'closing TCP flow');
        socket.destroy();
      }, ms);
      deadline.unref();
    };
    // An accepted connection owes its first message; one we opened waits for nothing.
    let partial = host === undefined;
    // Clients' connections are paced; those we opened (to a next hop) are not.
    const pacer = host === undefined && this.limits.flowRate > 0 ? new FlowPacer(this.limits.flowRate) : null;
    let pauseMs = 0;
    /** Messages this flow has completed (a read that completes one restarts the header deadline). */
    let completed = 0;
    if (partial) arm(this.limits.headerTimeoutMs, 'tcp-header-timeout');
    else arm(this.limits.idleMs, 'tcp-idle');
    const framer = new SipStreamFramer(
      {
        message: (bytes) => {
          completed++;
          this.onMessage(bytes, flow);
          if (pacer !== null) pauseMs = pacer.take();
          if (this.requestRate !== null && host === undefined) pauseMs = Math.max(pauseMs, this.requestRate.take(flow.address));
        },
        ping: () => writeInTurn(socket, [CRLF]),
        error: (reason, detail) => {
          this.metrics.drop('inbound', reason);
          this.log.info({ peer: key, reason, detail }, 'closing TCP flow: stream cannot be framed');
          socket.destroy();
        },
      },
      this.maxBytes,
    );
    /** What the address still owes on its other connections (ms); 0 for a connection we opened. */
    const owed = () => (this.requestRate !== null && host === undefined ? this.requestRate.owedMs(flow.address) : 0);
    // Over a rate: read nothing more until the bucket has refilled (TCP slows the client). The
    // deadline stops meanwhile (we read nothing, so nothing can drip) and starts again on resume;
    // the address may have spent more on its other connections meanwhile: wait for that too.
    const pauseFor = (ms: number) => {
      socket.pause();
      this.metrics.tcpFlowPauses.inc();
      if (deadline) clearTimeout(deadline);
      deadline = null;
      setTimeout(resumeWhenDue, ms).unref();
    };
    const resumeWhenDue = () => {
      if (socket.destroyed) return;
      const wait = owed();
      if (wait > 0) {
        setTimeout(resumeWhenDue, wait).unref();
        return;
      }
      if (framer.partial) arm(this.limits.headerTimeoutMs, 'tcp-header-timeout');
      else arm(this.limits.idleMs, 'tcp-idle');
      socket.resume();
    };
    // A new connection of an address in debt reads nothing until the debt is paid.
    const owedAtStart = owed();
    if (owedAtStart > 0) pauseFor(owedAtStart);
    socket.on('data', (chunk: Buffer) => {
      const before = completed;
      framer.push(chunk);
      if (framer.partial) {
        // The deadline runs from the message's first byte: dripping does not extend it. A read
        // that ended a message and began the next starts the next one's deadline (a client
        // streaming steadily is not a slowloris).
        if (!partial || completed > before) arm(this.limits.headerTimeoutMs, 'tcp-header-timeout');
        partial = true;
      } else if (!partial && deadline) {
        deadline.refresh(); // idle from now: the same timer, restarted (no allocation per chunk)
      } else {
        partial = false;
        arm(this.limits.idleMs, 'tcp-idle');
      }
      if (pauseMs > 0) {
        pauseFor(pauseMs);
        pauseMs = 0;
      }
    });
    socket.on('error', (err) => this.log.debug({ peer: key, err: err.message }, 'TCP flow error'));
    socket.on('close', () => {
      if (deadline) clearTimeout(deadline);
      if (this.flows.get(key) === flow) this.flows.delete(key);
      this.metrics.flows.dec();
    });
    return flow;
  }
}

/** "::ffff:198.18.0.10" -> "198.18.0.10", as the SIP server writes addresses. */
export function normalise(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
