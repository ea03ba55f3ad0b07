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
import { MessageArena } from './message-arena.ts';

interface Pending {
  link: number;
  bytes: Buffer;
  /** The client connection it came over on this node (a replicated one came over the master's: null). */
  conn: object | null;
  /** The address-of-record (To URI). */
  aor: string;
  /** Each Contact URI and the seconds asked for it (0: a removal); 'all' for `Contact: *`; none for a query. */
  contacts: ContactAsked[] | 'all';
  seenAt: number;
}

/** A Contact of a REGISTER: its URI, the seconds asked (0: a removal), its RFC 5626 flow identity when it gives one. */
export interface ContactAsked {
  uri: string;
  asked: number;
  /** The +sip.instance value (RFC 5626 4.1), and reg-id. */
  instance?: string;
  regId?: string;
}

/**
 * Sees each REGISTER the server accepted: its bytes (X-Sipha-Src first), its AOR, its contacts,
 * and the client connection it came over on this node (null: UDP, or replicated).
 */
export type AcceptedRegister = (bytes: Buffer, aor: string, contacts: readonly ContactAsked[], conn: object | null) => void;

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
const SOURCE = /\r\nX-Sipha-Src: (udp|tcp|tls):([0-9.]+):(\d+)(?:;replay)?\r\n/;

export class StateCache {
  /**
   * By binding (`${aor}\n${contact}`), in the order of their last change (the
   * burst's order): the binding's slot. A slot is a few typed-array fields
   * and its REGISTER's bytes sit in the arena (message-arena.ts), so a binding
   * costs its key, one map entry and its bytes: no object or Buffer of its own.
   */
  private readonly entries = new Map<string, number>();
  /** Per slot: when the binding expires (ms), its message in the arena, whether it is a removal. */
  private expiresAt = new Float64Array(1024);
  private message = new Int32Array(1024);
  private removal = new Uint8Array(1024);
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private readonly arena = new MessageArena();
  private removals = 0;
  private readonly pending = new Map<string, Pending>();
  /** Told of every REGISTER the server accepted (the flow successors learn from it). */
  onAccepted: AcceptedRegister | null = null;
  /**
   * Replayed REGISTERs (a burst this backup takes) waiting for its server's
   * answer: accepted by the master already and at most its cache's worth, so
   * bounded by maxEntries, not by maxPending. A backup reads a burst faster
   * than its server answers; under the live cap it forgot the oldest
   * unanswered ones (2,768 of 100,000 in the scale bench) and, once master,
   * would not have replayed them to the next backup.
   */
  private readonly pendingReplays = new Map<string, Pending>();
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
    return this.pending.size + this.pendingReplays.size;
  }

  /** Bytes of REGISTERs held (live) and the arena's chunks that hold them (allocated). */
  get bytes(): { allocated: number; live: number } {
    return this.arena.bytes;
  }

  /** Sees every inbound message as it goes to the server (slices as written to the link); `conn`: the connection it came over here. */
  observe(m: SipMessage, link: number, slices: Buffer[], conn: object | null = null): void {
    if (!m.isRequest || m.method !== 'REGISTER') return;
    const key = transactionKey(m);
    if (key === null) return;
    const bytes = ownCopy(slices);
    const replay = isReplay(bytes);
    const waiting = replay ? this.pendingReplays : this.pending;
    const cap = replay ? this.maxEntries : this.maxPending;
    waiting.delete(key); // a retransmission moves to the end
    if (waiting.size >= cap) {
      const oldest = waiting.keys().next().value;
      if (oldest !== undefined) waiting.delete(oldest);
    }
    waiting.set(key, {
      link,
      bytes,
      conn,
      aor: uriOf(m.header(Hdr.To) ?? '') ?? '',
      contacts: requestContacts(m),
      seenAt: this.now(),
    });
  }

  /** Sees every reply the server sends: a final answer to a waiting REGISTER decides whether it is kept. */
  answer(m: SipMessage): void {
    if (m.isRequest || m.status < 200 || m.method !== 'REGISTER') return;
    const key = transactionKey(m);
    if (key === null) return;
    let p = this.pending.get(key);
    let replay = false;
    if (p !== undefined) this.pending.delete(key);
    else {
      p = this.pendingReplays.get(key);
      if (p === undefined) return;
      this.pendingReplays.delete(key);
      replay = true;
    }
    // A replay was accepted by the master's server when it was new: whatever this server says
    // (Kamailio answers 400 to a replay of a binding it holds from an earlier one), it is part of
    // the state this node must pass on. Its answer still tells the expiry, when it lists the contact.
    if (m.status >= 300 && !replay) return;
    if (p.contacts !== 'all') this.onAccepted?.(p.bytes, p.aor, p.contacts, p.conn);
    // The REGISTER's bytes go into the arena once, shared by every binding it sets or removes.
    let id = -1;
    const q = p;
    const msg = (): number => {
      if (id < 0) id = this.arena.add(q.bytes, q.link);
      else this.arena.ref(id);
      return id;
    };
    if (p.contacts === 'all') {
      for (const [k, slot] of this.entries)
        if (k.startsWith(`${p.aor}\n`) && this.removal[slot] === 0) this.put(k, msg(), this.expiresAt[slot] as number, true);
      return;
    }
    const now = this.now();
    for (const c of p.contacts) {
      const k = flat(`${p.aor}\n${c.uri}`);
      const old = this.entries.get(k);
      const granted = c.asked === 0 ? 0 : grantedExpiry(m, c.uri, c.asked);
      if (granted === 0) {
        // The removal stands in the binding's place until the binding would have expired.
        if (old !== undefined && this.removal[old] === 0) this.put(k, msg(), this.expiresAt[old] as number, true);
        continue;
      }
      // Removals count too: a client that registers and removes random contacts in a loop
      // would otherwise grow the cache by one removal each, for as long as each binding lived.
      if (old === undefined && this.entries.size >= this.maxEntries) {
        this.refused++;
        continue;
      }
      this.put(k, msg(), now + granted * 1000, false);
    }
  }

  /** Sets a binding at the end (the latest change replays last). */
  private put(k: string, message: number, expiresAt: number, removal: boolean): void {
    this.drop(k);
    const slot = this.freeSlots.pop() ?? this.newSlot();
    this.expiresAt[slot] = expiresAt;
    this.message[slot] = message;
    this.removal[slot] = removal ? 1 : 0;
    this.entries.set(k, slot);
    if (removal) this.removals++;
  }

  private drop(k: string): void {
    const slot = this.entries.get(k);
    if (slot === undefined) return;
    this.entries.delete(k);
    if (this.removal[slot] === 1) this.removals--;
    this.arena.release(this.message[slot] as number);
    this.freeSlots.push(slot);
  }

  private newSlot(): number {
    const slot = this.nextSlot++;
    if (slot >= this.expiresAt.length) {
      const n = this.expiresAt.length * 2;
      const e = new Float64Array(n);
      e.set(this.expiresAt);
      this.expiresAt = e;
      const m = new Int32Array(n);
      m.set(this.message);
      this.message = m;
      const r = new Uint8Array(n);
      r.set(this.removal);
      this.removal = r;
    }
    return slot;
  }

  /** Drops expired registrations and REGISTERs that were never answered. */
  prune(): void {
    const now = this.now();
    for (const [key, slot] of this.entries) if ((this.expiresAt[slot] as number) <= now) this.drop(key);
    for (const waiting of [this.pending, this.pendingReplays])
      for (const [key, p] of waiting) {
        if (now - p.seenAt < PENDING_MS) break; // insertion order is arrival order
        waiting.delete(key);
      }
  }

  /**
   * Distinct UDP sources of live registrations: where the master sends NAT
   * keepalives (the registered client's binding on its NAT).
   */
  udpFlows(): Array<{ address: string; port: number }> {
    const seen = new Map<string, { address: string; port: number }>();
    const now = this.now();
    for (const slot of this.entries.values()) {
      if ((this.expiresAt[slot] as number) <= now || this.removal[slot] === 1) continue;
      const m = SOURCE.exec(this.arena.head(this.message[slot] as number, 512));
      if (m && m[1] === 'udp') seen.set(`${m[2]}:${m[3]}`, { address: m[2] as string, port: Number(m[3]) });
    }
    return [...seen.values()];
  }

  /**
   * What a joining backup must be told, oldest first, each marked as a replay
   * (REPLAY_MARK: accepted already, not to be authenticated again); expired
   * entries are dropped on the way. Read lazily (the sender takes a slice per
   * turn): what changes meanwhile is replayed as it is when reached, and the
   * live messages that changed it follow the burst (replication.ts).
   */
  *burst(): Generator<{ link: number; bytes: Buffer }> {
    // A REGISTER with several contacts stands for each of its bindings: replayed once. (By
    // serial, not id: an id freed during the burst may come back for a newer REGISTER.)
    const sent = new Set<number>();
    for (const [key, slot] of this.entries) {
      if ((this.expiresAt[slot] as number) <= this.now()) {
        this.drop(key);
        continue;
      }
      const id = this.message[slot] as number;
      const serial = this.arena.serial(id);
      if (sent.has(serial)) continue;
      sent.add(serial);
      yield { link: this.arena.link(id), bytes: markReplay(this.arena.view(id)) };
    }
  }
}

const SOURCE_LINE = Buffer.from(`\r\n${SOURCE_HEADER}: `, 'latin1');
const MARK = Buffer.from(REPLAY_MARK, 'latin1');

/** A replayed REGISTER: REPLAY_MARK ends its X-Sipha-Src value (the sidecar's own first header). */
function isReplay(bytes: Buffer): boolean {
  const at = bytes.indexOf(SOURCE_LINE);
  const end = at < 0 ? -1 : bytes.indexOf('\r\n', at + SOURCE_LINE.length, 'latin1');
  return end >= 0 && bytes.subarray(end - MARK.length, end).equals(MARK);
}

/** The cached REGISTER with REPLAY_MARK at the end of its X-Sipha-Src value (unchanged if it has none). */
export function markReplay(bytes: Buffer): Buffer {
  const at = bytes.indexOf(SOURCE_LINE);
  const end = at < 0 ? -1 : bytes.indexOf('\r\n', at + SOURCE_LINE.length, 'latin1');
  // (a backup caches what it was replayed: once a master, it replays it as it came)
  if (end < 0 || isReplay(bytes)) return bytes;
  return Buffer.concat([bytes.subarray(0, end), MARK, bytes.subarray(end)]);
}

/**
 * The string as one flat copy of its own. A key built by concatenation is a
 * tree of pieces, and a piece cut from a parsed header keeps the whole header
 * string alive: 150 bytes more per binding kept for an hour. (Headers are
 * latin1 text, so the round trip is exact.)
 */
function flat(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

function transactionKey(m: SipMessage): string | null {
  return m.callId === '' ? null : `${m.callId}\n${m.cseq}`;
}

/** Every value of a header that may repeat (Contact), comma lists split. */
function allValues(m: SipMessage, id: HdrId): string[] {
  const out: string[] = [];
  for (let i = m.find(id); i >= 0; i = m.find(id, i + 1)) splitList(m.valueAt(i), out);
  return out;
}

/** Splits a header value at the commas outside quotes and <> (a display name or a parameter may hold one). */
function splitList(v: string, out: string[]): void {
  let depth = 0;
  let quoted = false;
  let from = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c)
        i++; // quoted-pair
      else if (c === 0x22) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === 0x3c) depth++;
    else if (c === 0x3e) depth = Math.max(0, depth - 1);
    else if (c === 0x2c && depth === 0) {
      out.push(v.slice(from, i));
      from = i + 1;
    }
  }
  out.push(v.slice(from));
}

/** The URI inside a name-addr or addr-spec value (without <>, header parameters or display name). */
function uriOf(value: string): string | null {
  const lt = value.indexOf('<');
  if (lt >= 0) return value.slice(lt + 1, value.indexOf('>', lt) < 0 ? undefined : value.indexOf('>', lt)).trim();
  return (value.split(';')[0] ?? '').trim() || null;
}

/** The bindings a REGISTER names, with the seconds asked for each; 'all' for `Contact: *`; [] for a query. */
function requestContacts(m: SipMessage): ContactAsked[] | 'all' {
  const values = allValues(m, Hdr.Contact);
  if (values.length === 1 && values[0]?.trim() === '*') return 'all';
  const e = m.header(Hdr.Expires);
  const header = e !== undefined && /^\s*\d+\s*$/.test(e) ? Number(e) : 3600;
  const out: ContactAsked[] = [];
  for (const v of values) {
    const uri = uriOf(v);
    if (uri === null) continue;
    const c: ContactAsked = { uri, asked: expiresParam(v) ?? header };
    // Header parameters follow the URI's closing '>' (RFC 5626 4.2: +sip.instance, reg-id).
    const params = v.slice(v.indexOf('>') + 1);
    const instance = /;\s*\+sip\.instance\s*=\s*"?<([^>"]{1,256})>"?/i.exec(params)?.[1];
    const regId = /;\s*reg-id\s*=\s*(\d{1,9})/i.exec(params)?.[1];
    if (instance !== undefined) c.instance = instance;
    if (regId !== undefined) c.regId = regId;
    out.push(c);
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
