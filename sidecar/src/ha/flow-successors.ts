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
 * A connection is a client's only once a REGISTER of that client was
 * accepted over it (`onOwned`; the proxy marks the open connection). A host's
 * clients all reconnect at once after a takeover and its kernel hands out
 * source ports in sequence, so a new connection can come from the port another
 * client's dead one had: the address the other client's dialogs name. A request
 * whose Request-URI is a Contact exactly one client registered (`ownerOf`)
 * therefore goes only on a connection that client registered over: its
 * address's, else its newest flow's; never on another client's.
 *
 * Bounded: every map keeps at most `max` entries, the least recently
 * registered dropped first.
 */
import type { Transport } from '../../../contract/link.ts';
import { destinationKey, uriDestination } from '../proxy/destination.ts';
import { tcpSource } from './client-flows.ts';
import type { ContactAsked } from './state-cache.ts';

export interface StreamFlow {
  readonly transport: 'tcp' | 'tls';
  readonly host: string;
  readonly port: number;
}

const flowKey = (transport: Transport, host: string, port: number) => `${transport}:${destinationKey(host, port)}`;

export class FlowSuccessors {
  /** Client identity -> its newest flow. */
  private readonly newest = new Map<string, StreamFlow>();
  /** Any flow or contact address a client used -> its identity. */
  private readonly clientOf = new Map<string, string>();
  /** A registered Contact (user part and where it points) -> the one client that registered it; AMBIGUOUS: more than one. */
  private readonly contactOwner = new Map<string, string>();
  private readonly max: number;
  /** Told that `id` registered over the flow: the proxy marks its open connection there as that client's. */
  private readonly onOwned: (flow: StreamFlow, id: string) => void;

  constructor(max: number, onOwned: (flow: StreamFlow, id: string) => void = () => {}) {
    this.max = max;
    this.onOwned = onOwned;
  }

  /** A REGISTER the server accepted: its source (X-Sipha-Src) becomes the client's newest flow. */
  accepted(bytes: Buffer, aor: string, contacts: readonly ContactAsked[]): void {
    const src = tcpSource(bytes); // the sidecar's own stamp, first header (contract/link.ts)
    if (src === null) return; // UDP: a datagram has no flow to lose
    const flow: StreamFlow = { transport: src.tls ? 'tls' : 'tcp', host: src.address, port: src.port };
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
        const had = this.contactOwner.get(key);
        put(this.contactOwner, key, had === undefined || had === id ? id : AMBIGUOUS, this.max);
      }
      this.onOwned(flow, id);
    }
  }

  /** The one client that registered the Contact this Request-URI names, if exactly one did. */
  ownerOf(requestUri: string): string | undefined {
    const key = contactKey(requestUri);
    const id = key === null ? undefined : this.contactOwner.get(key);
    return id === AMBIGUOUS ? undefined : id;
  }

  /** The flow a client last registered from. */
  newestOf(id: string): StreamFlow | undefined {
    return this.newest.get(id);
  }

  /** The newest flow of the client `transport:host:port` belonged to, when it is another one over the same transport. */
  successor(transport: Transport, host: string, port: number): StreamFlow | null {
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

/** Not an identity (those start with the AOR): a Contact more than one client registered. */
const AMBIGUOUS = '';

/** A Contact or Request-URI as the client wrote it, user part included; null unless TCP or TLS. */
function contactKey(uri: string): string | null {
  const dst = uriDestination(uri);
  if (typeof dst === 'string' || (dst.transport !== 'tcp' && dst.transport !== 'tls')) return null;
  const s = uri.trim();
  const colon = s.indexOf(':');
  const at = s.indexOf('@', colon);
  const semi = s.indexOf(';', colon);
  const user = at >= 0 && (semi < 0 || at < semi) ? s.slice(colon + 1, at) : '';
  return `${user}@${flowKey(dst.transport, dst.host, dst.port)}`;
}

/** Sets k last (the Map stays in registration order) and drops the oldest past max. */
function put<V>(map: Map<string, V>, k: string, v: V, max: number): void {
  map.delete(k);
  map.set(k, v);
  if (map.size > max) map.delete(map.keys().next().value as string);
}
