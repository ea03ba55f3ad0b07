/**
 * The edge proxy: every SIP packet between the network and the local SIP
 * server passes here.
 *
 *   client --UDP/TCP--> public socket --(X-Sipha-Src)--> link (TCP) --> server
 *   server --link--> reply, routed by its top Via --> client
 *   server --UDP egress port--> request (X-Sipha-Nh) --> next hop
 *
 * All egress passes one gate (`EgressGate`): a backup withholds it there.
 */
import { timingSafeEqual } from 'node:crypto';
import dgram from 'node:dgram';
import { LINK_TOKEN_HEADER, SOURCE_HEADER, type Transport } from '../../../contract/link.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { afterStartLine, applyEdits, type Edit, removeHeader } from '../sip/edit.ts';
import { Hdr } from '../sip/headers.ts';
import type { SipMessage } from '../sip/message.ts';
import { parseMessage } from '../sip/scanner.ts';
import { AddressRate } from './address-rate.ts';
import {
  type Destination,
  replyDestination,
  TLS_UNSUPPORTED,
  TRANSPORT_UNSUPPORTED,
  type Unsupported,
  uriDestination,
} from './destination.ts';
import type { EgressDigest } from './egress-digest.ts';
import { ExpiringMap } from './expiring-map.ts';
import { ServerLink } from './server-link.ts';
import { type Flow, type FlowOwner, type FlowTls, type StreamTarget, TcpFlows, type TcpLimits } from './tcp-flows.ts';

export interface Source {
  readonly transport: Transport;
  readonly address: string;
  readonly port: number;
}

/** Says why a message must not leave, or null to let it go. */
export type EgressGate = (msg: SipMessage) => string | null;
/** Sees every well-formed inbound message as handed to the server, with its link connection (replication hooks in here). */
/** `flow`: the client connection it came over (null: UDP). */
export type InboundTap = (m: SipMessage, link: number, slices: Buffer[], flow: Flow | null) => void;
/** Decides when an allowed egress message may leave (sync replication holds it until the backup acked). */
export type EgressHold = (send: () => void) => void;

export interface EdgeProxyOptions {
  publicAddress: string;
  sipPort: number;
  serverHost: string;
  serverPort: number;
  egressPort: number;
  linkConnections: number;
  maxMessageBytes: number;
  /** Public TCP limits (connections, timeouts, unread bytes); defaults when absent. */
  tcpLimits?: TcpLimits;
  /** The link's shared secret (contract/link.ts LINK_TOKEN_HEADER); null: none. */
  linkToken?: string | null;
  /** Bytes the server may leave unread on a link connection before it counts as busy. */
  linkMaxBacklog?: number;
  /** SIP over TLS (contract/tls-settings.ts); absent: TLS is refused, never sent as TCP. */
  tls?: FlowTls | null;
  /** Requests a second one client address may send, all transports together (address-rate.ts); absent or rate 0: no limit. */
  requestRate?: { rate: number; burst: number };
}

/** Client addresses whose request rate is remembered (64k buckets, a few MiB at most). */
const RATE_ADDRESSES = 65_536;

const DOUBLE_CRLF = Buffer.from('\r\n\r\n');
// Transactions live at most ~3 min (INVITE with provisionals); 2 generations of 120 s.
const TRANSACTION_MS = 120_000;

/** AORs and instances remembered per connection; past it (a PBX's lines) the connection counts as anyone's. */
const OWNERS_MAX = 4096;
/** Instances are kept apart from AORs in a connection's owners. */
const INSTANCE = '\ninstance ';
const owns = (flow: Flow, o: FlowOwner) =>
  flow.owners !== undefined &&
  (flow.owners.size >= OWNERS_MAX ||
    flow.owners.has(o.aor) ||
    (o.instance !== undefined && flow.owners.has(INSTANCE + o.instance)));

export class EdgeProxy {
  gate: EgressGate = () => null;
  tap: InboundTap | null = null;
  hold: EgressHold | null = null;
  /** Optional determinism audit (see egress-digest.ts). */
  digest: EgressDigest | null = null;
  /** Consumes answers to the sidecar's own probes of its server (they never leave). */
  probeAnswer: ((m: SipMessage) => boolean) | null = null;
  /**
   * What the node learned of its TCP/TLS clients (ha/flow-successors.ts):
   * `successor`, where a request for a flow that is not open here goes instead
   * (the same client's newest flow); `ownerOf`, whose Contact a request goes to
   * (the AOR that registered the Contact its Request-URI names, if one did and
   * the request goes where it points), and `newestOf` that client's newest
   * flow. Such a request is kept off a connection other AORs registered over
   * (ownedBy): another client's, from a port the first one had before.
   */
  clientFlows: {
    successor(transport: 'tcp' | 'tls', host: string, port: number): StreamTarget | null;
    ownerOf(requestUri: string, to: StreamTarget): FlowOwner | undefined;
    newestOf(id: string): StreamTarget | undefined;
  } | null = null;
  /** Sees every reply from the server, whatever the role (the state cache keeps what it accepted). */
  replyTap: ((m: SipMessage) => void) | null = null;
  /**
   * Set during a planned switchover: inbound messages are dropped (clients
   * retransmit them to the new master) while what the server already has
   * drains out; egress still flows.
   */
  inboundPaused = false;

  private udp: dgram.Socket | null = null;
  private publicBound = false;
  /**
   * When the public sockets last opened, and the first message in from a
   * client and out to one after that (performance.now(); 0: none yet): where
   * a takeover's time goes after the new master serves (network, or server).
   */
  readonly firstAfterOpen = { openedAt: 0, inAt: 0, outAt: 0 };
  private readonly egress: dgram.Socket;
  private readonly flows: TcpFlows;
  /** TLS clients and next hops; null without certificates. */
  private readonly tlsFlows: TcpFlows | null;
  private readonly link: ServerLink;
  /** Branch of a TCP client's request -> its flow, for the responses. */
  private readonly requestFlows = new ExpiringMap<string, Flow>(TRANSACTION_MS);
  /** Branch of a relayed INVITE -> next hop, for the CANCEL/ACK the server builds without X-Sipha-Nh. */
  private readonly inviteHops = new ExpiringMap<string, Destination>(TRANSACTION_MS);
  private readonly opts: EdgeProxyOptions;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly requestRate: AddressRate | null;
  private overRateSaidAt = -Infinity;

  constructor(opts: EdgeProxyOptions, log: Logger, metrics: Metrics) {
    this.opts = opts;
    this.log = log;
    this.metrics = metrics;
    this.egress = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20 });
    this.egress.on('message', (bytes, rinfo) => {
      if (rinfo.address !== opts.serverHost) return; // only the local server may hand over egress
      this.fromServer(bytes, true);
    });
    const fromFlow = (bytes: Buffer, flow: Flow) =>
      this.fromClient(bytes, { transport: flow.transport, address: flow.address, port: flow.port }, flow);
    this.flows = new TcpFlows(opts.publicAddress, opts.maxMessageBytes, log, metrics, fromFlow, opts.tcpLimits);
    this.tlsFlows = opts.tls
      ? new TcpFlows(opts.publicAddress, opts.maxMessageBytes, log, metrics, fromFlow, opts.tcpLimits, opts.tls)
      : null;
    const rate = opts.requestRate;
    this.requestRate = rate && rate.rate > 0 ? new AddressRate({ ...rate, maxAddresses: RATE_ADDRESSES }) : null;
    this.flows.requestRate = this.requestRate;
    if (this.tlsFlows) this.tlsFlows.requestRate = this.requestRate;
    this.link = new ServerLink(
      {
        host: opts.serverHost,
        port: opts.serverPort,
        connections: opts.linkConnections,
        maxMessageBytes: opts.maxMessageBytes,
        ...(opts.linkMaxBacklog !== undefined ? { maxBacklogBytes: opts.linkMaxBacklog } : {}),
      },
      log,
      metrics,
      (bytes) => this.fromServer(bytes),
    );
  }

  get linkToken(): string | null {
    return this.opts.linkToken ?? null;
  }

  /** Binds the loopback side and, unless `publicLater`, the public address too. */
  async start(publicLater = false): Promise<void> {
    await bind(this.egress, this.opts.egressPort, this.opts.serverHost);
    if (!publicLater) await this.openPublic();
    this.log.info(
      { public: `${this.opts.publicAddress}:${this.opts.sipPort}`, server: `${this.opts.serverHost}:${this.opts.serverPort}` },
      'edge proxy listening',
    );
  }

  /** Binds the public UDP and TCP sockets (a new master does this once it holds the VIP). */
  async openPublic(): Promise<void> {
    if (this.publicBound) return;
    const udp = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
    udp.on('message', (bytes, rinfo) => {
      // Past its address's rate a message is dropped before it costs a parse (the client sends it again).
      if (this.requestRate !== null && !this.requestRate.admit(rinfo.address)) {
        this.metrics.hot.inbound++;
        this.metrics.drop('inbound', 'address-rate');
        this.overRate(rinfo.address);
        return;
      }
      this.fromClient(bytes, { transport: 'udp', address: rinfo.address, port: rinfo.port }, null);
    });
    udp.on('error', (err) => this.log.error({ err }, 'public UDP socket error'));
    try {
      await bind(udp, this.opts.sipPort, this.opts.publicAddress);
      this.udp = udp;
      await this.flows.listen(this.opts.sipPort);
      if (this.tlsFlows && this.opts.tls) await this.tlsFlows.listen(this.opts.tls.settings.port);
    } catch (err) {
      // All or nothing: a socket left bound would make every later attempt fail on it.
      udp.close();
      this.udp = null;
      this.flows.close();
      this.tlsFlows?.close();
      throw err;
    }
    this.publicBound = true;
    this.firstAfterOpen.openedAt = performance.now();
    this.firstAfterOpen.inAt = 0;
    this.firstAfterOpen.outAt = 0;
  }

  /** Unbinds the public sockets (on demotion, before the VIP is released). */
  closePublic(): void {
    if (!this.publicBound) return;
    this.udp?.close();
    this.udp = null;
    this.flows.close();
    this.tlsFlows?.close();
    this.publicBound = false;
  }

  get serverReady(): boolean {
    return this.link.ready;
  }

  get serverLink(): ServerLink {
    return this.link;
  }

  /** The TLS listener while it is bound (its certificate is swapped in place on reload). */
  get tlsServer() {
    return this.tlsFlows?.tlsServer ?? null;
  }

  close(): void {
    this.udp?.close();
    this.egress.close();
    this.flows.close();
    this.tlsFlows?.close();
    this.link.close();
    this.requestFlows.close();
    this.inviteHops.close();
  }

  /** Says (at most every 10 s, with the address) that an address goes over its rate: drops nobody expects are loud. */
  private overRate(address: string): void {
    const now = performance.now();
    if (now - this.overRateSaidAt < 10_000) return;
    this.overRateSaidAt = now;
    this.log.warn(
      { address, rate: this.opts.requestRate?.rate },
      'an address sends faster than SIPHA_REQUEST_RATE_PER_ADDRESS: its excess is dropped',
    );
  }

  /** A message from the network: check it, stamp its source, hand it to the server. */
  fromClient(bytes: Buffer, src: Source, flow: Flow | null): void {
    this.metrics.hot.inbound++;
    if (this.firstAfterOpen.inAt === 0) this.firstAfterOpen.inAt = performance.now();
    if (this.inboundPaused) {
      this.metrics.drop('inbound', 'switchover');
      return;
    }
    const m = parseMessage(bytes, { maxBytes: this.opts.maxMessageBytes, requireContentLength: src.transport !== 'udp' });
    if (!m.ok) {
      this.metrics.drop('inbound', m.reason);
      this.log.debug({ src, reason: m.reason, detail: m.detail }, 'dropped malformed message');
      return;
    }
    if (flow !== null && m.isRequest && m.topVia.branch !== undefined) this.requestFlows.set(m.topVia.branch, flow);
    const link = this.link.indexFor(m.callId);
    if (this.link.busy(link)) {
      // The server is behind by the link's whole backlog. A UDP client sends again; a TCP
      // client's request is taken (TCP requests are not sent again), but its connection is
      // not read any further until the server has caught up.
      if (flow === null) {
        this.metrics.drop('inbound', 'server-busy');
        return;
      }
      if (!flow.socket.isPaused()) {
        flow.socket.pause();
        this.metrics.linkBusyPauses.inc();
        this.link.whenDrained(link, () => flow.socket.resume());
      }
    }
    const slices = toServer(m, src, this.opts.linkToken ?? null);
    // Replicate first: under sync replication the barrier then covers this message.
    this.tap?.(m, link, slices, flow);
    if (!this.link.sendOn(link, slices)) {
      this.metrics.drop('inbound', 'server-unavailable');
      return;
    }
    this.metrics.hot.toServer++;
  }

  /** A message from the server (reply on the link, or request on the egress port). */
  fromServer(bytes: Buffer, viaEgress = false): void {
    this.metrics.hot.fromServer++;
    const m = parseMessage(bytes, { maxBytes: this.opts.maxMessageBytes });
    if (!m.ok) {
      this.metrics.drop('from_server', m.reason);
      this.log.warn({ reason: m.reason, detail: m.detail }, 'dropped malformed message from the SIP server');
      return;
    }
    if (this.probeAnswer?.(m)) return;
    // The egress port is reachable by every process of a hostNetwork node: only the server knows the token.
    if (viaEgress && !this.fromOurServer(m)) {
      this.metrics.drop('egress', 'link-token');
      return;
    }
    if (!m.isRequest) this.replyTap?.(m);
    // Before the gate: a backup withholds its requests but must know where its
    // INVITEs went, for the CANCEL/ACK it builds after a takeover.
    const hop = m.isRequest ? this.nextHop(m) : null;
    const withheld = this.gate(m);
    this.digest?.record(m, withheld === null ? 'sent' : 'withheld');
    if (withheld !== null) {
      this.metrics.drop('egress', withheld);
      return;
    }
    const send = () => (hop !== null ? this.sendRequest(m, hop) : this.sendReply(m));
    if (this.hold) this.hold(send);
    else send();
  }

  /** A request on the egress port carries the link token, or is tm's CANCEL/ACK for an INVITE we relayed. */
  private fromOurServer(m: SipMessage): boolean {
    const token = this.opts.linkToken;
    if (!token) return true;
    const i = m.find(Hdr.SiphaToken);
    if (i >= 0 && tokenEquals(m.valueAt(i), token)) return true;
    return (
      (m.method === 'CANCEL' || m.method === 'ACK') &&
      m.topVia.branch !== undefined &&
      this.inviteHops.get(m.topVia.branch) !== undefined
    );
  }

  private sendReply(m: SipMessage): void {
    const dst = this.carrier(replyDestination(m.topVia));
    if (typeof dst === 'string') {
      this.metrics.drop('egress', dst);
      return;
    }
    const out = withoutLinkHeaders(m, []);
    if (dst.transport === 'udp') {
      this.sendUdp(out, dst);
      return;
    }
    const flows = this.flowsFor(dst.transport);
    const branch = m.topVia.branch;
    const came = branch !== undefined ? this.requestFlows.get(branch) : undefined;
    // On the connection the request came on; if that one has closed, RFC 3261 18.2.2: a connection
    // to the Via's received/rport (or the same client's newest flow: streamFlow).
    const flow = came !== undefined && !came.socket.destroyed ? came : this.streamFlow(flows, dst.host, dst.port);
    flows.write(flow, out);
    this.sentToClient();
  }

  /** The connections of a stream transport (carrier() has refused TLS when there are none). */
  private flowsFor(transport: 'tcp' | 'tls'): TcpFlows {
    return transport === 'tls' ? (this.tlsFlows as TcpFlows) : this.flows;
  }

  /** The destination if this sidecar can carry its transport: TLS only with certificates. */
  private carrier(dst: Destination | Unsupported | string): Destination | string {
    if (typeof dst === 'string') return dst;
    return dst.transport === 'tls' && this.tlsFlows === null ? TLS_UNSUPPORTED : dst;
  }

  /**
   * Where a request from the server goes: the X-Sipha-Nh it names, else (CANCEL,
   * ACK) where its INVITE went, else the first Route or the Request-URI. An
   * INVITE's hop is remembered by branch.
   */
  private nextHop(m: SipMessage): Destination | string {
    let dst: Destination | string | undefined;
    const nh = m.find(Hdr.SiphaNextHop);
    if (nh >= 0) dst = uriDestination(m.valueAt(nh));
    else if (m.method === 'CANCEL' || m.method === 'ACK') {
      dst = m.topVia.branch !== undefined ? this.inviteHops.get(m.topVia.branch) : undefined;
    }
    dst ??= firstRouteOrUri(m);
    if (typeof dst !== 'string' && m.method === 'INVITE' && m.topVia.branch !== undefined) {
      this.inviteHops.set(m.topVia.branch, dst);
    }
    return dst;
  }

  private sendRequest(m: SipMessage, hop: Destination | string): void {
    const dst = this.carrier(hop);
    if (typeof dst === 'string') {
      const known = dst === TLS_UNSUPPORTED || dst === TRANSPORT_UNSUPPORTED;
      this.metrics.drop('egress', known ? dst : 'no-next-hop');
      this.log.warn({ method: m.method, problem: dst }, 'request from the SIP server has no usable next hop');
      return;
    }
    const edits: Edit[] = [];
    // The server sent it to us over UDP, so its Via says UDP; say what really carries it.
    const want = dst.transport.toUpperCase();
    const via = m.topVia;
    if (via.transport !== want && via.transportEnd - via.transportStart === 3) {
      edits.push({ at: via.transportStart, remove: 3, insert: Buffer.from(want) });
      // Over TLS the sent-by names the TLS port: a response whose connection broke
      // (the master died mid-transaction) comes back there (RFC 3261 18.2.2).
      if (dst.transport === 'tls' && this.opts.tls && via.port !== this.opts.tls.settings.port) {
        const sentBy = `${via.host}:${this.opts.tls.settings.port}`;
        edits.push({ at: via.sentByStart, remove: via.sentByEnd - via.sentByStart, insert: Buffer.from(sentBy) });
      }
    }
    const slices = withoutLinkHeaders(m, edits);
    if (dst.transport === 'udp') {
      this.sendUdp(slices, dst);
      return;
    }
    const flows = this.flowsFor(dst.transport);
    const owner = this.clientFlows?.ownerOf(m.requestUri, dst as StreamTarget); // not udp: returned above
    const flow =
      owner === undefined ? this.streamFlow(flows, dst.host, dst.port) : this.clientsFlow(flows, dst.host, dst.port, owner);
    if (flow === null) {
      this.metrics.drop('egress', 'flow-of-another-client');
      this.log.info(
        { method: m.method, to: `${dst.host}:${dst.port}` },
        'request not sent: the connection there is not its client’s',
      );
      return;
    }
    flows.write(flow, slices);
    this.sentToClient();
  }

  /** A REGISTER of `aor` was accepted over this connection (its owners, up to OWNERS_MAX). */
  ownedBy(flow: Flow, aor: string, contacts: readonly { instance?: string }[] = []): void {
    flow.owners ??= new Set();
    const owners = flow.owners;
    const add = (v: string) => {
      if (owners.size < OWNERS_MAX) owners.add(v);
    };
    add(aor);
    // The device's RFC 5626 instance too: its other lines are its own, registered over it or not yet.
    for (const c of contacts) if (c.instance !== undefined) add(INSTANCE + c.instance);
  }

  /**
   * For a request to a registered Contact (`owner`): a connection its AOR registered over, at
   * host:port or at the client's newest flow; null when host:port is a connection only other AORs
   * registered over (another client's, from a port this one had before); else as streamFlow (a
   * connection nobody registered over yet may be the client's own, back from the same port).
   */
  private clientsFlow(flows: TcpFlows, host: string, port: number, owner: FlowOwner): Flow | null {
    const open = flows.get(host, port);
    if (open !== undefined && owns(open, owner)) return open;
    const next = this.clientFlows?.newestOf(owner.id);
    const moved = next !== undefined && next.transport === flows.transport ? flows.get(next.host, next.port) : undefined;
    if (moved !== undefined && owns(moved, owner)) {
      this.metrics.flowRedirects.inc({ transport: flows.transport });
      return moved;
    }
    if (open?.owners !== undefined) return null;
    return this.streamFlow(flows, host, port);
  }

  /** The open flow to host:port; else the same client's newest flow, if open here; else a new connection. */
  private streamFlow(flows: TcpFlows, host: string, port: number): Flow {
    const open = flows.get(host, port);
    if (open !== undefined) return open;
    const next = this.clientFlows?.successor(flows.transport, host, port);
    const moved = next ? flows.get(next.host, next.port) : undefined;
    if (moved !== undefined) {
      this.metrics.flowRedirects.inc({ transport: flows.transport });
      return moved;
    }
    return flows.getOrOpen(host, port);
  }

  /**
   * A NAT keepalive (RFC 5626 4.4.1 style double CRLF) from the public
   * socket to a registered UDP client. Only the serving master calls this.
   */
  keepalive(address: string, port: number): void {
    this.udp?.send(DOUBLE_CRLF, port, address);
    this.metrics.hot.keepalives++;
  }

  private sendUdp(slices: Buffer[], dst: Destination): void {
    if (this.udp === null) {
      this.metrics.drop('egress', 'no-public-socket');
      return;
    }
    this.udp.send(slices, dst.port, dst.host, (err) => {
      if (err) {
        this.metrics.drop('egress', 'send-failed');
        this.log.debug({ err: err.message, dst }, 'UDP send failed');
      }
    });
    this.sentToClient();
  }

  private sentToClient(): void {
    this.metrics.hot.toClient++;
    if (this.firstAfterOpen.outAt === 0) this.firstAfterOpen.outAt = performance.now();
  }
}

/**
 * The message as it may leave for the network, with `edits`: without any
 * X-Sipha-* header. Kamailio relays a far end's reply as it got it, with the
 * X-Sipha-Src and X-Sipha-Token this sidecar stamped on it (SIPHA_IN removes them
 * from requests only); the token must never reach a client.
 */
function withoutLinkHeaders(m: SipMessage, edits: Edit[]): Buffer[] {
  for (const h of LINK_HEADERS) for (let i = m.find(h); i >= 0; i = m.find(h, i + 1)) edits.push(removeHeader(m, i));
  return applyEdits(m, edits);
}

const LINK_HEADERS = [Hdr.SiphaSource, Hdr.SiphaNextHop, Hdr.SiphaToken];

/** The message as the server must see it: source stamped, framing made explicit. */
export function toServer(m: SipMessage, src: Source, token: string | null = null): Buffer[] {
  const stamp = `${SOURCE_HEADER}: ${src.transport}:${src.address}:${src.port}\r\n`;
  const edits: Edit[] = [
    {
      at: afterStartLine(m),
      remove: 0,
      insert: Buffer.from(token ? `${stamp}${LINK_TOKEN_HEADER}: ${token}\r\n` : stamp),
    },
  ];
  // A client may not speak for the sidecar: its own X-Sipha-* headers go.
  for (const h of LINK_HEADERS) for (let i = m.find(h); i >= 0; i = m.find(h, i + 1)) edits.push(removeHeader(m, i));
  // The link is a stream: a UDP message without Content-Length gets one.
  if (!m.hasContentLength)
    edits.push({ at: m.headersEnd, remove: 0, insert: Buffer.from(`Content-Length: ${m.bodyLength}\r\n`) });
  return applyEdits(m, edits);
}

function firstRouteOrUri(m: SipMessage): Destination | string {
  const r = m.find(Hdr.Route);
  if (r >= 0) {
    const v = m.valueAt(r);
    const comma = v.indexOf(',');
    return uriDestination(comma >= 0 ? v.slice(0, comma) : v);
  }
  return uriDestination(m.requestUri);
}

function bind(s: dgram.Socket, port: number, address: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, address, () => {
      s.off('error', reject);
      resolve();
    });
  });
}

/** Compares the token in constant time (a forger learns nothing from how fast it is refused). */
function tokenEquals(value: string, token: string): boolean {
  const a = Buffer.from(value.trim(), 'latin1');
  const b = Buffer.from(token, 'latin1');
  return a.length === b.length && timingSafeEqual(a, b);
}
