/**
 * The master's compacted cache of state-bearing messages, replayed as a
 * burst to a backup that (re)joins, before the live stream (ARCHITECTURE:
 * "caching for burst"). With the example configuration (no dialog module)
 * the state worth carrying is the location table: the latest REGISTER per
 * Call-ID (one registering UA), dropped when it expires or is withdrawn.
 * Dialogs need no cache: in-dialog requests are loose-routed by
 * Record-Route to the VIP. A replayed REGISTER re-arms its expiry from the
 * moment of replay (a late backup may keep a binding up to the time the
 * burst took longer than the original): accepted, and documented.
 */
import { Hdr } from '../sip/headers.ts';
import type { SipMessage } from '../sip/message.ts';

interface Entry {
  link: number;
  bytes: Buffer;
  expiresAt: number;
}

// The sidecar stamps the client's source as the first header (contract/link.ts).
const SOURCE = /\r\nX-Sipha-Src: (udp|tcp):([0-9.]+):(\d+)\r\n/;

export class StateCache {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Sees every inbound message as it goes to the server (slices as written to the link). */
  observe(m: SipMessage, link: number, slices: Buffer[]): void {
    if (!m.isRequest || m.method !== 'REGISTER') return;
    const key = m.callId;
    const seconds = registerExpiry(m);
    if (seconds === 0) {
      this.entries.delete(key);
      return;
    }
    this.entries.set(key, {
      link,
      bytes: slices.length === 1 ? Buffer.from(slices[0] as Buffer) : Buffer.concat(slices),
      expiresAt: this.now() + seconds * 1000,
    });
  }

  /**
   * Distinct UDP sources of live registrations: where the master sends NAT
   * keepalives (the registered client's binding on its NAT).
   */
  udpFlows(): Array<{ address: string; port: number }> {
    const seen = new Map<string, { address: string; port: number }>();
    const now = this.now();
    for (const e of this.entries.values()) {
      if (e.expiresAt <= now) continue;
      const m = SOURCE.exec(e.bytes.toString('latin1', 0, Math.min(e.bytes.length, 512)));
      if (m && m[1] === 'udp') seen.set(`${m[2]}:${m[3]}`, { address: m[2] as string, port: Number(m[3]) });
    }
    return [...seen.values()];
  }

  /** What a joining backup must be told, oldest first; expired entries are dropped on the way. */
  *burst(): Generator<{ link: number; bytes: Buffer }> {
    const now = this.now();
    for (const [key, e] of this.entries) {
      if (e.expiresAt <= now) {
        this.entries.delete(key);
        continue;
      }
      yield { link: e.link, bytes: e.bytes };
    }
  }
}

/**
 * Seconds a REGISTER asks for: the first contact's expires parameter, else
 * the Expires header, else 3600 (RFC 3261 10.2.1.1). `Contact: *` is a removal.
 */
export function registerExpiry(m: SipMessage): number {
  const contact = m.header(Hdr.Contact);
  if (contact !== undefined) {
    if (contact.trim() === '*') return 0;
    const p = /;\s*expires\s*=\s*(\d+)/i.exec(contact.split(',')[0] ?? '');
    if (p) return Number(p[1]);
  }
  const e = m.header(Hdr.Expires);
  if (e !== undefined && /^\s*\d+\s*$/.test(e)) return Number(e);
  return contact === undefined ? 0 : 3600;
}
