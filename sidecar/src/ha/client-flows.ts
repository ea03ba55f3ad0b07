/**
 * The TCP client flows the master has, as a backup learns them from the
 * replicated messages' X-Sipha-Src: at takeover these are the connections that
 * died with the old master (vip/tcp-tickle.ts tells their clients so).
 *
 * Bounded: at most `max` flows, the least recently heard dropped first (a Map
 * in hearing order); a flow silent for `idleMs` was closed by the master's own
 * idle limit and is not returned.
 */
import { SOURCE_HEADER } from '../../../contract/link.ts';
import type { ClientFlow } from '../vip/tcp-tickle.ts';

const PREFIX = Buffer.from(`\r\n${SOURCE_HEADER}: tcp:`, 'latin1');
/** The first header starts within this many bytes (a request line is short; anything longer is not ours). */
const FIRST_LINE_MAX = 8192;

/** The TCP client a link message came from (the sidecar's own first header), or null for UDP and anything else. */
export function tcpSource(payload: Buffer): ClientFlow | null {
  // The first header, or nothing: one scan for the end of the start line, one compare.
  const at = payload.indexOf(13);
  if (at < 0 || at > FIRST_LINE_MAX || at + PREFIX.length > payload.length) return null;
  if (payload.compare(PREFIX, 0, PREFIX.length, at, at + PREFIX.length) !== 0) return null;
  let i = at + PREFIX.length;
  let address = '';
  for (; i < payload.length; i++) {
    const c = payload[i] as number;
    if (c === 58) break; // ':'
    if ((c < 48 || c > 57) && c !== 46) return null;
    address += String.fromCharCode(c);
  }
  let port = 0;
  for (i++; i < payload.length; i++) {
    const c = payload[i] as number;
    if (c < 48 || c > 57) break;
    port = port * 10 + c - 48;
  }
  if (address.length < 7 || port < 1 || port > 65535) return null;
  return { address, port };
}

export class TcpClientFlows {
  private readonly heard = new Map<string, { flow: ClientFlow; at: number }>();
  private readonly max: number;
  private readonly idleMs: number;

  constructor(max: number, idleMs: number) {
    this.max = max;
    this.idleMs = idleMs;
  }

  /** A message from this flow was replicated (now: performance.now()). */
  heardFrom(flow: ClientFlow, now = performance.now()): void {
    const key = `${flow.address}:${flow.port}`;
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
