/**
 * Where a message goes next: replies by their top Via (RFC 3261 18.2.2 with
 * RFC 3581 rport), requests by the next-hop URI the server names.
 */
import type { Transport } from '../../../contract/link.ts';
import type { Via } from '../sip/via.ts';

export interface Destination {
  readonly transport: Transport;
  readonly host: string;
  readonly port: number;
}

/**
 * The sidecar carries SIP over UDP and TCP only. A next hop or a reply that
 * asks for TLS (sips:, transport=tls, a TLS Via) or WebSockets is refused and
 * counted, never sent in clear over TCP (issue 9 item 9).
 */
export const TLS_UNSUPPORTED = 'tls-unsupported';

export function transportOf(token: string): Transport | null {
  if (token === 'UDP') return 'udp';
  return token === 'TCP' ? 'tcp' : null;
}

/** A response goes to received (else sent-by host), port rport (else sent-by port). */
export function replyDestination(via: Via): Destination | typeof TLS_UNSUPPORTED {
  const transport = transportOf(via.transport);
  if (transport === null) return TLS_UNSUPPORTED;
  return { transport, host: via.received ?? via.host, port: via.rport || via.port || 5060 };
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
  if (scheme === 'sips') return TLS_UNSUPPORTED;
  if (scheme !== 'sip') return `unsupported scheme ${scheme}`;
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
  const port = portText === '' ? 5060 : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `bad port ${portText}`;
  let transport: Transport = 'udp';
  for (const p of params.split(';')) {
    if (p === 'transport=tcp') transport = 'tcp';
    else if (p === 'transport=udp') transport = 'udp';
    else if (p.startsWith('transport=')) return TLS_UNSUPPORTED;
  }
  return { transport, host, port };
}

export function destinationKey(host: string, port: number): string {
  return `${host}:${port}`;
}
