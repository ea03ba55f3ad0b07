/**
 * The TCP client flows the master has, as a backup learns them from the
 * replicated messages' X-Sipha-Src: at takeover these are the connections that
 * died with the old master (vip/tcp-tickle.ts tells their clients so).
 *
 * Bounded: at most `max` flows, the least recently heard dropped first (a Map
 * in hearing order). A flow not heard for twice the master's idle limit is not
 * returned: the master closed it (twice: the master also counts RFC 5626 CRLF
 * pings, which are not replicated; tickling a closed flow costs one packet).
 */
import { isIPv4 } from 'node:net';
import { SOURCE_HEADER } from '../../../contract/link.ts';
import type { ClientFlow } from '../vip/tcp-tickle.ts';

const PREFIX = Buffer.from(`\r\n${SOURCE_HEADER}: tcp:`, 'latin1');
const TLS_PREFIX = Buffer.from(`\r\n${SOURCE_HEADER}: tls:`, 'latin1');
/** The first header starts within this many bytes (a request line is short; anything longer is not ours). */
const FIRST_LINE_MAX = 8192;

/** The TCP or TLS client a link message came from (the sidecar's own first header), or null for UDP and anything else. */
export function tcpSource(payload: Buffer): ClientFlow | null {
  // The first header, or nothing: the end of the start line (looked for in the first bytes only), one compare.
  const at = payload.subarray(0, FIRST_LINE_MAX).indexOf(13);
  if (at < 0 || at + PREFIX.length > payload.length) return null;
  // Byte compares only: the backup runs this for every replicated message, UDP ones included.
  let tls = false;
  if (payload.compare(PREFIX, 0, PREFIX.length, at, at + PREFIX.length) !== 0) {
    if (payload.compare(TLS_PREFIX, 0, TLS_PREFIX.length, at, at + TLS_PREFIX.length) !== 0) return null;
    tls = true;
  }
  const from = at + PREFIX.length;
  const colon = payload.subarray(from, from + 16).indexOf(58); // ':' after at most "255.255.255.255"
  if (colon < 0) return null;
  const address = payload.toString('latin1', from, from + colon);
  if (!isIPv4(address)) return null;
  let port = 0;
  for (let i = from + colon + 1; i < payload.length && i < from + colon + 7; i++) {
    const c = payload[i] as number;
    if (c < 48 || c > 57) break;
    port = port * 10 + c - 48;
  }
  if (port < 1 || port > 65535) return null;
  return tls ? { address, port, tls } : { address, port };
}

export class TcpClientFlows {
  private readonly heard = new Map<string, { flow: ClientFlow; at: number }>();
  private readonly max: number;
  private readonly idleMs: number;

  constructor(max: number, idleMs: number) {
    this.max = max;
    this.idleMs = 2 * idleMs;
  }

  /** A message from this flow was replicated (now: performance.now()). */
  heardFrom(flow: ClientFlow, now = performance.now()): void {
    const key = `${flow.tls ? 's' : ''}${flow.address}:${flow.port}`;
    this.heard.delete(key); // re-inserted last: the Map stays in hearing order
    this.heard.set(key, { flow, at: now });
    if (this.heard.size > this.max) this.heard.delete(this.heard.keys().next().value as string);
  }

  /** The flows heard within the idle limit; forgets them all (they are tickled once). */
  take(now = performance.now()): ClientFlow[] {
    const live: ClientFlow[] = [];
    for (const { flow, at } of this.heard.values()) if (now - at < this.idleMs) live.push(flow);
    this.heard.clear();
    return live;
  }

  get size(): number {
    return this.heard.size;
  }
}
