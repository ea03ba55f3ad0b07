/**
 * Where a message goes next: replies by their top Via (RFC 3261 18.2.2 with
 * RFC 3581 rport), requests by the next-hop URI the server names.
 */
import type { Transport } from '../../../contract/link.ts';
import { DEFAULT_TLS_PORT } from '../../../contract/tls-settings.ts';
import type { Via } from '../sip/via.ts';

export interface Destination {
  readonly transport: Transport;
  readonly host: string;
  readonly port: number;
}

/**
 * The sidecar carries SIP over UDP, TCP and (when it has certificates) TLS.
 * A next hop or a reply that asks for another transport (WebSockets, SCTP) is
 * refused and counted, never sent over one it did not ask for; so is TLS on a
 * sidecar without TLS (issue 9 item 9): never a silent downgrade to TCP.
 */
export const TLS_UNSUPPORTED = 'tls-unsupported';
export const TRANSPORT_UNSUPPORTED = 'transport-unsupported';
export type Unsupported = typeof TLS_UNSUPPORTED | typeof TRANSPORT_UNSUPPORTED;

export function transportOf(token: string): Transport | null {
  if (token === 'UDP') return 'udp';
  if (token === 'TCP') return 'tcp';
  return token === 'TLS' ? 'tls' : null;
}

/** RFC 3261 19.1.2: 5061 for TLS, 5060 otherwise. */
export const defaultPort = (t: Transport): number => (t === 'tls' ? DEFAULT_TLS_PORT : 5060);

/** A response goes to received (else sent-by host), port rport (else sent-by port). */
export function replyDestination(via: Via): Destination | Unsupported {
  const transport = transportOf(via.transport);
  if (transport === null) return TRANSPORT_UNSUPPORTED;
  return { transport, host: via.received ?? via.host, port: via.rport || via.port || defaultPort(transport) };
}

/**
 * Parses a SIP URI (`sip:[user@]host[:port][;params]`, optionally in <>)
 * into a destination; `transport=` picks TCP. Returns what is wrong otherwise.
 */
export function uriDestination(raw: string): Destination | string {
  let s = raw.trim();
  if (s.startsWith('<')) s = s.slice(1, s.indexOf('>') < 0 ? undefined : s.indexOf('>'));
  const colon = s.indexOf(':');
  if (colon < 0) return 'URI without scheme';
  const scheme = s.slice(0, colon).toLowerCase();
  if (scheme !== 'sip' && scheme !== 'sips') return `unsupported scheme ${scheme}`;
  let rest = s.slice(colon + 1);
  const q = rest.indexOf('?');
  if (q >= 0) rest = rest.slice(0, q);
  const semi = rest.indexOf(';');
  const params = semi >= 0 ? rest.slice(semi + 1).toLowerCase() : '';
  let hostport = semi >= 0 ? rest.slice(0, semi) : rest;
  const at = hostport.lastIndexOf('@');
  if (at >= 0) hostport = hostport.slice(at + 1);
  let host: string;
  let portText = '';
  if (hostport.startsWith('[')) {
    const close = hostport.indexOf(']');
    if (close < 0) return 'unterminated IPv6 reference';
    host = hostport.slice(1, close);
    if (hostport[close + 1] === ':') portText = hostport.slice(close + 2);
  } else {
    const c = hostport.indexOf(':');
    host = c >= 0 ? hostport.slice(0, c) : hostport;
    if (c >= 0) portText = hostport.slice(c + 1);
  }
  if (host === '') return 'URI without host';
  // RFC 3263 4.1 without DNS: sips means TLS; else the transport parameter, else UDP.
  let transport: Transport = scheme === 'sips' ? 'tls' : 'udp';
  for (const p of params.split(';')) {
    if (!p.startsWith('transport=')) continue;
    const t = transportOf(p.slice(10).toUpperCase());
    if (t === null) return TRANSPORT_UNSUPPORTED;
    // sips over anything but TLS would be a downgrade (RFC 5630 3.1.3: sips means TLS on every hop).
    if (scheme === 'sips' && t !== 'tls' && t !== 'tcp') return TLS_UNSUPPORTED;
    if (scheme !== 'sips') transport = t;
  }
  const port = portText === '' ? defaultPort(transport) : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `bad port ${portText}`;
  return { transport, host, port };
}

export function destinationKey(host: string, port: number): string {
  return `${host}:${port}`;
}
