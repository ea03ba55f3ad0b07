/**
 * The master's compacted cache of state-bearing messages, replayed as a
 * burst to a backup that (re)joins, before the live stream (ARCHITECTURE:
 * "caching for burst"). With the example configuration (no dialog module)
 * the state worth carrying is the location table, kept as the registrar keeps
 * it: per binding (address-of-record + contact URI), the latest accepted
 * REGISTER that set it. A removal (expires 0, or `Contact: *` for every
 * binding of the address-of-record), whatever its Call-ID, replaces the
 * binding with the removal itself, replayed too until the binding it removed
 * would have expired: a backup that missed it (its stream was down) drops the
 * binding, instead of keeping it, or getting it back from the burst.
 * Dialogs need no cache: in-dialog requests are loose-routed by
 * Record-Route to the VIP. A replayed REGISTER re-arms its expiry from the
 * moment of replay (a late backup may keep a binding up to the time the
 * burst took longer than the original): accepted, and documented.
 *
 * Only what the server accepted is kept (issue 9 item 5): a REGISTER waits
 * (bounded, by Call-ID and CSeq) for the server's final answer; a 2xx keeps it
 * for the time the server granted, anything else forgets it. So a flood of
 * REGISTERs the server challenges (401) with random Call-IDs costs nothing
 * here, and NAT keepalives go only to sources of accepted registrations.
 * Both maps are capped; expired entries are pruned by time.
 */
import { REPLAY_MARK, SOURCE_HEADER } from '../../../contract/link.ts';
import { Hdr, type HdrId } from '../sip/headers.ts';
import type { SipMessage } from '../sip/message.ts';

interface Entry {
  link: number;
  bytes: Buffer;
  expiresAt: number;
  /** The REGISTER that removed this binding (replayed so a backup that missed it removes it too). */
  removal: boolean;
}

interface Pending {
  link: number;
  bytes: Buffer;
  /** The address-of-record (To URI). */
  aor: string;
  /** Each Contact URI and the seconds asked for it (0: a removal); 'all' for `Contact: *`; none for a query. */
  contacts: Array<{ uri: string; asked: number }> | 'all';
  seenAt: number;
}

export interface StateCacheOptions {
  now?: () => number;
  /** Bindings kept, removals included; past it new ones are refused (counted). */
  maxEntries?: number;
  /** REGISTERs waiting for the server's final answer; past it the oldest go. */
  maxPending?: number;
}

/** A REGISTER's transaction ends within 64 x T1 = 32 s (RFC 3261 17.1.2.2); unanswered ones go after this. */
const PENDING_MS = 40_000;
/** Longest granted expiry believed (s): keeps Date arithmetic sane whatever the server says. */
const MAX_EXPIRY_S = 30 * 86_400;

// The sidecar stamps the client's source as the first header (contract/link.ts).
const SOURCE = /\r\nX-Sipha-Src: (udp|tcp):([0-9.]+):(\d+)(?:;replay)?\r\n/;

export class StateCache {
  /** By binding (`${aor}\n${contact}`), in the order of their last change: the burst's order. */
  private readonly entries = new Map<string, Entry>();
  private removals = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly now: () => number;
  private readonly maxEntries: number;
  private readonly maxPending: number;
  /** Accepted registrations not kept because the cache was full. */
  refused = 0;

  constructor(opts: StateCacheOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.maxEntries = opts.maxEntries ?? 250_000;
    this.maxPending = opts.maxPending ?? 20_000;
  }

  /** Live bindings (removals not counted). */
  get size(): number {
    return this.entries.size - this.removals;
  }

  get pendingSize(): number {
    return this.pending.size;
  }

  /** Sees every inbound message as it goes to the server (slices as written to the link). */
  observe(m: SipMessage, link: number, slices: Buffer[]): void {
    if (!m.isRequest || m.method !== 'REGISTER') return;
    const key = transactionKey(m);
    if (key === null) return;
    this.pending.delete(key); // a retransmission moves to the end
    if (this.pending.size >= this.maxPending) {
      const oldest = this.pending.keys().next().value;
      if (oldest !== undefined) this.pending.delete(oldest);
    }
    this.pending.set(key, {
      link,
      bytes: ownCopy(slices),
      aor: uriOf(m.header(Hdr.To) ?? '') ?? '',
      contacts: requestContacts(m),
      seenAt: this.now(),
    });
  }

  /** Sees every reply the server sends: a final answer to a waiting REGISTER decides whether it is kept. */
  answer(m: SipMessage): void {
    if (m.isRequest || m.status < 200 || m.method !== 'REGISTER') return;
    const key = transactionKey(m);
    const p = key === null ? undefined : this.pending.get(key);
    if (p === undefined || key === null) return;
    this.pending.delete(key);
    if (m.status >= 300) return;
    if (p.contacts === 'all') {
      for (const [k, e] of this.entries) if (k.startsWith(`${p.aor}\n`) && !e.removal) this.removed(k, e, p);
      return;
    }
    const now = this.now();
    for (const c of p.contacts) {
      const k = `${p.aor}\n${c.uri}`;
      const old = this.entries.get(k);
      const granted = c.asked === 0 ? 0 : grantedExpiry(m, c.uri, c.asked);
      if (granted === 0) {
        if (old !== undefined && !old.removal) this.removed(k, old, p);
        continue;
      }
      // Removals count too: a client that registers and removes random contacts in a loop
      // would otherwise grow the cache by one removal each, for as long as each binding lived.
      if (old === undefined && this.entries.size >= this.maxEntries) {
        this.refused++;
        continue;
      }
      this.put(k, { link: p.link, bytes: p.bytes, expiresAt: now + granted * 1000, removal: false });
    }
  }

  /** A binding removed by `p`: the removal stands in its place until the binding would have expired. */
  private removed(k: string, old: Entry, p: Pending): void {
    this.put(k, { link: p.link, bytes: p.bytes, expiresAt: old.expiresAt, removal: true });
  }

  /** Sets an entry at the end (the latest change replays last). */
  private put(k: string, e: Entry): void {
    this.drop(k);
    this.entries.set(k, e);
    if (e.removal) this.removals++;
  }

  private drop(k: string): void {
    const e = this.entries.get(k);
    if (e === undefined) return;
    this.entries.delete(k);
    if (e.removal) this.removals--;
  }

  /** Drops expired registrations and REGISTERs that were never answered. */
  prune(): void {
    const now = this.now();
    for (const [key, e] of this.entries) if (e.expiresAt <= now) this.drop(key);
    for (const [key, p] of this.pending) {
      if (now - p.seenAt < PENDING_MS) break; // insertion order is arrival order
      this.pending.delete(key);
    }
  }

  /**
   * Distinct UDP sources of live registrations: where the master sends NAT
   * keepalives (the registered client's binding on its NAT).
   */
  udpFlows(): Array<{ address: string; port: number }> {
    const seen = new Map<string, { address: string; port: number }>();
    const now = this.now();
    for (const e of this.entries.values()) {
      if (e.expiresAt <= now || e.removal) continue;
      const m = SOURCE.exec(e.bytes.toString('latin1', 0, Math.min(e.bytes.length, 512)));
      if (m && m[1] === 'udp') seen.set(`${m[2]}:${m[3]}`, { address: m[2] as string, port: Number(m[3]) });
    }
    return [...seen.values()];
  }

  /**
   * What a joining backup must be told, oldest first, each marked as a replay
   * (REPLAY_MARK: accepted already, not to be authenticated again); expired
   * entries are dropped on the way.
   */
  *burst(): Generator<{ link: number; bytes: Buffer }> {
    const now = this.now();
    // A REGISTER with several contacts stands for each of its bindings: replayed once.
    const sent = new Set<Buffer>();
    for (const [key, e] of this.entries) {
      if (e.expiresAt <= now) {
        this.drop(key);
        continue;
      }
      if (sent.has(e.bytes)) continue;
      sent.add(e.bytes);
      yield { link: e.link, bytes: markReplay(e.bytes) };
    }
  }
}

const SOURCE_LINE = Buffer.from(`\r\n${SOURCE_HEADER}: `, 'latin1');
const MARK = Buffer.from(REPLAY_MARK, 'latin1');

/** The cached REGISTER with REPLAY_MARK at the end of its X-Sipha-Src value (unchanged if it has none). */
export function markReplay(bytes: Buffer): Buffer {
  const at = bytes.indexOf(SOURCE_LINE);
  const end = at < 0 ? -1 : bytes.indexOf('\r\n', at + SOURCE_LINE.length, 'latin1');
  // (a backup caches what it was replayed: once a master, it replays it as it came)
  if (end < 0 || bytes.subarray(end - MARK.length, end).equals(MARK)) return bytes;
  return Buffer.concat([bytes.subarray(0, end), MARK, bytes.subarray(end)]);
}

function transactionKey(m: SipMessage): string | null {
  return m.callId === '' ? null : `${m.callId}\n${m.cseq}`;
}

/** Every value of a header that may repeat (Contact), comma lists split. */
function allValues(m: SipMessage, id: HdrId): string[] {
  const out: string[] = [];
  for (let i = m.find(id); i >= 0; i = m.find(id, i + 1)) out.push(...m.valueAt(i).split(','));
  return out;
}

/** The URI inside a name-addr or addr-spec value (without <>, header parameters or display name). */
function uriOf(value: string): string | null {
  const lt = value.indexOf('<');
  if (lt >= 0) return value.slice(lt + 1, value.indexOf('>', lt) < 0 ? undefined : value.indexOf('>', lt)).trim();
  return (value.split(';')[0] ?? '').trim() || null;
}

/** The bindings a REGISTER names, with the seconds asked for each; 'all' for `Contact: *`; [] for a query. */
function requestContacts(m: SipMessage): Array<{ uri: string; asked: number }> | 'all' {
  const values = allValues(m, Hdr.Contact);
  if (values.length === 1 && values[0]?.trim() === '*') return 'all';
  const e = m.header(Hdr.Expires);
  const header = e !== undefined && /^\s*\d+\s*$/.test(e) ? Number(e) : 3600;
  const out: Array<{ uri: string; asked: number }> = [];
  for (const v of values) {
    const uri = uriOf(v);
    if (uri !== null) out.push({ uri, asked: expiresParam(v) ?? header });
  }
  return out;
}

/**
 * The expiry the server granted this binding: the `expires` of the answer's
 * Contact for our URI (a registrar lists every binding of the AOR), else the
 * answer's Expires header, else what was asked.
 */
function grantedExpiry(m: SipMessage, uri: string | null, asked: number): number {
  if (uri !== null) {
    for (const c of allValues(m, Hdr.Contact)) {
      if (uriOf(c) !== uri) continue;
      const p = expiresParam(c);
      if (p !== null) return Math.min(p, MAX_EXPIRY_S);
    }
  }
  const e = m.header(Hdr.Expires);
  if (e !== undefined && /^\s*\d+\s*$/.test(e)) return Math.min(Number(e), MAX_EXPIRY_S);
  return Math.min(asked, MAX_EXPIRY_S);
}

/**
 * Seconds a REGISTER asks for: the first contact's expires parameter, else
 * the Expires header, else 3600 (RFC 3261 10.2.1.1). `Contact: *` is a removal.
 */
export function registerExpiry(m: SipMessage): number {
  const contact = m.header(Hdr.Contact);
  if (contact !== undefined) {
    if (contact.trim() === '*') return 0;
    const p = expiresParam(contact.split(',')[0] ?? '');
    if (p !== null) return p;
  }
  const e = m.header(Hdr.Expires);
  if (e !== undefined && /^\s*\d+\s*$/.test(e)) return Number(e);
  return contact === undefined ? 0 : 3600;
}

/** The `expires` parameter of one Contact value, if any. */
function expiresParam(contact: string): number | null {
  const p = /;\s*expires\s*=\s*(\d+)/i.exec(contact);
  return p ? Number(p[1]) : null;
}

/**
 * The message's bytes in a buffer of their own. Not from Node's shared 8 KiB
 * pool: a cached REGISTER lives for an hour and would pin the whole slab it was
 * cut from, with the passing traffic around it (30,000 registrations held 45 MB
 * of buffers that way, 1.5 KB each).
 */
function ownCopy(slices: Buffer[]): Buffer {
  let n = 0;
  for (const s of slices) n += s.length;
  const out = Buffer.allocUnsafeSlow(n);
  let at = 0;
  for (const s of slices) at += s.copy(out, at);
  return out;
}
