/**
 * Wire format between a sidecar and the UDP witness (arbiter). Same rules as
 * wire.ts: big-endian, versioned, a magic per direction, and a 16-byte
 * HMAC-SHA256 over everything before it, keyed with `witnessKey(pair key)`
 * (derived from the pair's replication Secret; `key` below is that one).
 * Pure: no sockets, no clock.
 *
 * Claim (sidecar -> witness), 62 bytes:
 *   'SPWC' | ver u8 | ordinal u8 | reserved u16 (0) | pair u32 | term u32 |
 *   ttlMs u32 | incarnation u48 | seq u32 | nonce[16] | hmac[16]
 * Answer (witness -> sidecar), 52 bytes (smaller than a claim: no amplification):
 *   'SPWA' | ver u8 | verdict u8 | reason u8 | holder u8 | pair u32 |
 *   holderTerm u32 | remainingMs u32 | nonce[16] | hmac[16]
 *
 * `pair` is derived from the key, so an arbiter can refuse another pair's
 * datagram before computing an HMAC (and later pick a key per pair).
 * `incarnation` (ms since the epoch when the client started) and `seq` (per
 * claim) let the arbiter drop a replayed claim; `nonce` binds an answer to
 * the claim it answers, so a replayed answer is worthless.
 */
import { createHmac } from 'node:crypto';
import { keyObject, MAC, mac, macOk } from './wire.ts';

export const WITNESS_WIRE_VERSION = 1;
export const NONCE_BYTES = 16;
const CLAIM_MAGIC = 0x53505743; // 'SPWC'
const ANSWER_MAGIC = 0x53505741; // 'SPWA'
export const CLAIM_BYTES = 4 + 1 + 1 + 2 + 4 + 4 + 4 + 6 + 4 + NONCE_BYTES + MAC;
export const ANSWER_BYTES = 4 + 1 + 1 + 1 + 1 + 4 + 4 + 4 + NONCE_BYTES + MAC;
/** A lease longer than this is refused on the wire: a stuck holder must not block the pair for long. */
export const MAX_TTL_MS = 60_000;

export interface ClaimMessage {
  ordinal: 0 | 1;
  pair: number;
  term: number;
  ttlMs: number;
  incarnation: number;
  seq: number;
  nonce: Buffer;
}

/** Why a claim was granted or refused; the index is the byte on the wire. */
export const GRANT_REASONS = ['free', 'renewal', 'expired'] as const;
export type GrantReason = (typeof GRANT_REASONS)[number];
export const REFUSE_REASONS = ['held'] as const;
export type RefuseReason = (typeof REFUSE_REASONS)[number];

export type AnswerMessage =
  | {
      verdict: 'granted';
      reason: GrantReason;
      holder: 0 | 1;
      pair: number;
      holderTerm: number;
      remainingMs: number;
      nonce: Buffer;
    }
  | {
      verdict: 'refused';
      reason: RefuseReason;
      holder: 0 | 1;
      pair: number;
      holderTerm: number;
      remainingMs: number;
      nonce: Buffer;
    };

const VERDICT_GRANTED = 1;
const VERDICT_REFUSED = 2;

/**
 * The key of the witness wire, derived from the pair's replication key. The
 * witness host needs only this one: holding it, it cannot forge heartbeats or
 * replication frames for the pair (those use the replication key itself).
 */
export function witnessKey(pairKey: Buffer): Buffer {
  return createHmac('sha256', keyObject(pairKey)).update('sipha-witness-key-v1').digest();
}

/** The pair's id on the witness wire: 32 bits of HMAC(witness key, label). Not secret, not a key. */
export function witnessPairId(key: Buffer): number {
  return createHmac('sha256', keyObject(key)).update('sipha-witness-pair-id').digest().readUInt32BE(0);
}

const u32 = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

export function encodeClaim(key: Buffer, c: ClaimMessage): Buffer {
  if (!u32(c.term) || !u32(c.seq) || !u32(c.pair)) throw new RangeError('claim: term, seq and pair are u32');
  if (!Number.isInteger(c.ttlMs) || c.ttlMs < 1 || c.ttlMs > MAX_TTL_MS) throw new RangeError(`claim: ttlMs 1..${MAX_TTL_MS}`);
  if (!Number.isInteger(c.incarnation) || c.incarnation < 0 || c.incarnation > 2 ** 48 - 1)
    throw new RangeError('claim: incarnation is u48');
  if (c.nonce.length !== NONCE_BYTES) throw new RangeError(`claim: nonce is ${NONCE_BYTES} bytes`);
  const b = Buffer.alloc(CLAIM_BYTES);
  b.writeUInt32BE(CLAIM_MAGIC, 0);
  b[4] = WITNESS_WIRE_VERSION;
  b[5] = c.ordinal;
  // 6..7 reserved, zero
  b.writeUInt32BE(c.pair, 8);
  b.writeUInt32BE(c.term, 12);
  b.writeUInt32BE(c.ttlMs, 16);
  b.writeUIntBE(c.incarnation, 20, 6);
  b.writeUInt32BE(c.seq, 26);
  c.nonce.copy(b, 30);
  mac(key, b.subarray(0, CLAIM_BYTES - MAC)).copy(b, CLAIM_BYTES - MAC);
  return b;
}

/**
 * The pair id of a datagram that looks like a claim, or a reason it does not
 * (cheap checks only: the arbiter picks the key by it before the HMAC).
 */
export function peekClaimPair(b: Buffer): number | string {
  if (b.length !== CLAIM_BYTES) return 'size';
  if (b.readUInt32BE(0) !== CLAIM_MAGIC) return 'magic';
  if (b[4] !== WITNESS_WIRE_VERSION) return 'version';
  return b.readUInt32BE(8);
}

/** The claim, or a reason it was dropped. The nonce is a copy (the caller may reuse `b`). */
export function decodeClaim(key: Buffer, b: Buffer): ClaimMessage | string {
  const pair = peekClaimPair(b);
  if (typeof pair === 'string') return pair;
  if (!macOk(key, b.subarray(0, CLAIM_BYTES - MAC), b.subarray(CLAIM_BYTES - MAC))) return 'hmac';
  const ordinal = b[5];
  const ttlMs = b.readUInt32BE(16);
  if ((ordinal !== 0 && ordinal !== 1) || b.readUInt16BE(6) !== 0 || ttlMs < 1 || ttlMs > MAX_TTL_MS) return 'field';
  return {
    ordinal,
    pair,
    term: b.readUInt32BE(12),
    ttlMs,
    incarnation: b.readUIntBE(20, 6),
    seq: b.readUInt32BE(26),
    nonce: Buffer.from(b.subarray(30, 30 + NONCE_BYTES)),
  };
}

export function encodeAnswer(key: Buffer, a: AnswerMessage): Buffer {
  if (!u32(a.holderTerm) || !u32(a.pair)) throw new RangeError('answer: holderTerm and pair are u32');
  if (a.nonce.length !== NONCE_BYTES) throw new RangeError(`answer: nonce is ${NONCE_BYTES} bytes`);
  const b = Buffer.alloc(ANSWER_BYTES);
  b.writeUInt32BE(ANSWER_MAGIC, 0);
  b[4] = WITNESS_WIRE_VERSION;
  if (a.verdict === 'granted') {
    b[5] = VERDICT_GRANTED;
    b[6] = GRANT_REASONS.indexOf(a.reason);
  } else {
    b[5] = VERDICT_REFUSED;
    b[6] = REFUSE_REASONS.indexOf(a.reason);
  }
  b[7] = a.holder;
  b.writeUInt32BE(a.pair, 8);
  b.writeUInt32BE(a.holderTerm, 12);
  // Clamped: a remaining time never needs more than u32 ms, and never goes negative.
  b.writeUInt32BE(Math.min(0xffffffff, Math.max(0, Math.floor(a.remainingMs))), 16); // never more than is left
  a.nonce.copy(b, 20);
  mac(key, b.subarray(0, ANSWER_BYTES - MAC)).copy(b, ANSWER_BYTES - MAC);
  return b;
}

/** The answer, or a reason it was dropped. The nonce is a view into `b`. */
export function decodeAnswer(key: Buffer, b: Buffer): AnswerMessage | string {
  if (b.length !== ANSWER_BYTES) return 'size';
  if (b.readUInt32BE(0) !== ANSWER_MAGIC) return 'magic';
  if (b[4] !== WITNESS_WIRE_VERSION) return 'version';
  if (!macOk(key, b.subarray(0, ANSWER_BYTES - MAC), b.subarray(ANSWER_BYTES - MAC))) return 'hmac';
  const holder = b[7];
  if (holder !== 0 && holder !== 1) return 'field';
  const common = {
    holder,
    pair: b.readUInt32BE(8),
    holderTerm: b.readUInt32BE(12),
    remainingMs: b.readUInt32BE(16),
    nonce: b.subarray(20, 20 + NONCE_BYTES),
  } as const;
  if (b[5] === VERDICT_GRANTED) {
    const reason = GRANT_REASONS[b[6] as number];
    return reason === undefined ? 'field' : { verdict: 'granted', reason, ...common };
  }
  if (b[5] === VERDICT_REFUSED) {
    const reason = REFUSE_REASONS[b[6] as number];
    return reason === undefined ? 'field' : { verdict: 'refused', reason, ...common };
  }
  return 'field';
}
