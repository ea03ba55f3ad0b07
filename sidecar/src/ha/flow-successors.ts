/**
 * Where a request for a dead TCP/TLS client flow goes instead (issue 11 item
 * 2; decision 0013). A client's connection dies with the master that held it;
 * the client connects to the new master and registers again, from a new port.
 * Its dialogs still name the old flow (the registrar's `received`, or the
 * Contact it gave in the INVITE), so the far end's BYE or re-INVITE would be
 * sent to a port nobody listens on.
 *
 * Both sidecars see every REGISTER their server accepts (the backup through
 * replication), so both know, per client, its newest flow and every flow it
 * registered from before. Only flows a REGISTER came on count: a Contact is
 * the client's word, not checked by anyone, so it never names a flow here
 * (else one Contact could pull a trunk's or another user's requests). A client is
 * - RFC 5626: its AOR, +sip.instance and reg-id (the phone says it is the same);
 * - else: its AOR, its IP address and its Contact (unless the Contact is the
 *   connection itself, which changes with every reconnection).
 * The AOR is part of the identity: only a client the server accepted as that
 * AOR can take over its flows (no stealing another user's calls by copying
 * their instance id). A request whose flow is not open here goes to the
 * client's newest flow when that one is, and over the same transport only
 * (never TLS traffic on a TCP connection).
 *
 * A host's clients all reconnect at once after a takeover and its kernel
 * hands out source ports in sequence, so a new connection can come from the
 * port another client's dead one had: the address the other client's dialogs
 * name. `ownerOf` says whose Contact a request goes to (the AOR that
 * registered it, if only one did; Contacts with a user part only), so the
 * proxy can keep it off a connection another AOR registered over (the proxy
 * marks its connections: EdgeProxy.ownedBy).
 *
 * Bounded: every map keeps at most `max` entries, the least recently
 * registered dropped first.
 */
import type { Transport } from '../../../contract/link.ts';
import { destinationKey, uriDestination } from '../proxy/destination.ts';
import type { EdgeProxy } from '../proxy/edge-proxy.ts';
import type { Flow, FlowOwner, StreamTarget } from '../proxy/tcp-flows.ts';
import { tcpSource } from './client-flows.ts';
import type { ContactAsked, StateCache } from './state-cache.ts';

const flowKey = (transport: Transport, host: string, port: number) => `${transport}:${destinationKey(host, port)}`;

export class FlowSuccessors {
  /** Client identity -> its newest flow. */
  private readonly newest = new Map<string, StreamTarget>();
  /** Any flow or contact address a client used -> its identity. */
  private readonly clientOf = new Map<string, string>();
  /** A registered Contact (user part and where it points) -> its AOR and latest client; null: more than one AOR registered it. */
  private readonly contactOwner = new Map<string, FlowOwner | null>();
  private readonly max: number;

  constructor(max: number) {
    this.max = max;
  }

  /** A REGISTER the server accepted: its source (X-Sipha-Src) becomes the client's newest flow. */
  accepted(bytes: Buffer, aor: string, contacts: readonly ContactAsked[]): void {
    const src = tcpSource(bytes); // the sidecar's own stamp, first header (contract/link.ts)
    if (src === null) return; // UDP: a datagram has no flow to lose
    const flow: StreamTarget = { transport: src.tls ? 'tls' : 'tcp', host: src.address, port: src.port };
    const source = flowKey(flow.transport, flow.host, flow.port);
    for (const c of contacts) {
      if (c.asked === 0) continue;
      // Only the connection the REGISTER came on is the client's: a Contact naming another
      // address (a trunk, another user's flow, a private address many phones share) says
      // nothing the server checked, and must never pull requests meant for it.
      let id: string;
      if (c.instance !== undefined) id = `${aor}\n${c.instance}\n${c.regId ?? ''}`;
      else {
        const contact = uriDestination(c.uri);
        const named = typeof contact === 'string' ? c.uri : flowKey(contact.transport, contact.host, contact.port);
        // The same AOR from the same address, with the same Contact unless the Contact is the connection itself.
        id = `${aor}\n@${flow.host}\n${named === source ? '' : named}`;
      }
      put(this.newest, id, flow, this.max);
      put(this.clientOf, source, id, this.max);
      const key = contactKey(c.uri);
      if (key !== null) {
        // One AOR's client may give the same Contact from a new connection (a stale one, then its own):
        // the latest is its owner. Two AORs behind one Contact: nobody can tell whose a request is.
        const had = this.contactOwner.get(key);
        const owner: FlowOwner = c.instance === undefined ? { aor, id } : { aor, id, instance: c.instance };
        put(this.contactOwner, key, had === undefined || had?.aor === aor ? owner : null, this.max);
      }
    }
  }

  /**
   * Whose Contact a request to `to` goes to: when its Request-URI is a Contact
   * with a user part that one AOR registered, and `to` is where that Contact
   * points (not a proxy on the way).
   */
  ownerOf(requestUri: string, to: StreamTarget): FlowOwner | undefined {
    const key = contactKey(requestUri);
    if (key === null || !key.endsWith(`@${flowKey(to.transport, to.host, to.port)}`)) return undefined;
    return this.contactOwner.get(key) ?? undefined;
  }

  /** The flow a client last registered from. */
  newestOf(id: string): StreamTarget | undefined {
    return this.newest.get(id);
  }

  /** The newest flow of the client `transport:host:port` belonged to, when it is another one over the same transport. */
  successor(transport: Transport, host: string, port: number): StreamTarget | null {
    const id = this.clientOf.get(flowKey(transport, host, port));
    if (id === undefined) return null;
    const next = this.newest.get(id);
    if (next === undefined || next.transport !== transport || (next.host === host && next.port === port)) return null;
    return next;
  }

  get size(): number {
    return this.newest.size;
  }
}

/**
 * Both roles learn each client's flows from what their server accepted, so a
 * new master sends a dialog's requests on the flow its client reconnected
 * with; a REGISTER that came over a connection of this node's (not replicated)
 * makes that connection its AOR's.
 */
export function learnClientFlows(cache: StateCache, proxy: EdgeProxy, max: number): FlowSuccessors {
  const successors = new FlowSuccessors(max);
  cache.onAccepted = (bytes, aor, contacts, conn) => {
    successors.accepted(bytes, aor, contacts);
    if (conn !== null) proxy.ownedBy(conn as Flow, aor, contacts);
  };
  proxy.clientFlows = successors;
  return successors;
}

/**
 * A Contact or Request-URI as the client wrote it: user part @ transport:host:port; null unless
 * TCP or TLS, or without a user part (a trunk's bare address says nothing about who is there).
 */
function contactKey(uri: string): string | null {
  const dst = uriDestination(uri);
  if (typeof dst === 'string' || (dst.transport !== 'tcp' && dst.transport !== 'tls')) return null;
  const s = uri.trim();
  const colon = s.indexOf(':');
  const at = s.indexOf('@', colon);
  const semi = s.indexOf(';', colon);
  if (at < 0 || (semi >= 0 && semi < at) || at === colon + 1) return null;
  return `${s.slice(colon + 1, at)}@${flowKey(dst.transport, dst.host, dst.port)}`;
}

/** Sets k last (the Map stays in registration order) and drops the oldest past max. */
function put<V>(map: Map<string, V>, k: string, v: V, max: number): void {
  map.delete(k);
  map.set(k, v);
  if (map.size > max) map.delete(map.keys().next().value as string);
}
