/**
 * The witness wire format, byte by byte and with no socket: layout, round
 * trips, and every way a datagram can be forged, damaged, cut, padded or
 * reflected, each refused with its reason.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ANSWER_BYTES,
  type AnswerMessage,
  CLAIM_BYTES,
  type ClaimMessage,
  decodeAnswer,
  decodeClaim,
  encodeAnswer,
  encodeClaim,
  MAX_TTL_MS,
  peekClaimPair,
  witnessPairId,
} from '../../contract/witness-wire.ts';

const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
const nonce = Buffer.from('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf', 'hex');
const pair = witnessPairId(key);

const aClaim: ClaimMessage = {
  ordinal: 1,
  pair,
  term: 0x01020304,
  ttlMs: 1000,
  incarnation: 0x0a0b0c0d0e0f,
  seq: 0x11223344,
  nonce,
};
const anAnswer: AnswerMessage = {
  verdict: 'refused',
  reason: 'held',
  holder: 0,
  pair,
  holderTerm: 6,
  remainingMs: 250,
  nonce,
};

/** Recomputes the tag, as a forger holding the key could: proves the field checks, not only the HMAC. */
function resign(b: Buffer): Buffer {
  const c = Buffer.from(b);
  createHmac('sha256', key)
    .update(c.subarray(0, c.length - 16))
    .digest()
    .subarray(0, 16)
    .copy(c, c.length - 16);
  return c;
}

describe('witness wire: layout', () => {
  it('a claim is 62 bytes, big-endian, fields where the header comment says', () => {
    const b = encodeClaim(key, aClaim);
    assert.equal(b.length, CLAIM_BYTES);
    assert.equal(CLAIM_BYTES, 62);
    assert.equal(b.subarray(0, 4).toString('latin1'), 'SPWC');
    assert.equal(b[4], 1, 'version');
    assert.equal(b[5], 1, 'ordinal');
    assert.deepEqual([...b.subarray(6, 8)], [0, 0], 'reserved');
    assert.equal(b.readUInt32BE(8), pair);
    assert.deepEqual([...b.subarray(12, 16)], [1, 2, 3, 4], 'term');
    assert.deepEqual([...b.subarray(16, 20)], [0, 0, 0x03, 0xe8], 'ttlMs 1000');
    assert.deepEqual([...b.subarray(20, 26)], [0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f], 'incarnation u48');
    assert.deepEqual([...b.subarray(26, 30)], [0x11, 0x22, 0x33, 0x44], 'seq');
    assert.deepEqual(b.subarray(30, 46), nonce);
    const tag = createHmac('sha256', key).update(b.subarray(0, 46)).digest().subarray(0, 16);
    assert.deepEqual(b.subarray(46), tag, 'HMAC-SHA256/128 over all before it');
  });

  it('an answer is 52 bytes (smaller than a claim: a spoofed source gains no amplification)', () => {
    const b = encodeAnswer(key, anAnswer);
    assert.equal(b.length, ANSWER_BYTES);
    assert.equal(ANSWER_BYTES, 52);
    assert.ok(ANSWER_BYTES < CLAIM_BYTES);
    assert.equal(b.subarray(0, 4).toString('latin1'), 'SPWA');
    assert.deepEqual([...b.subarray(4, 8)], [1, 2, 0, 0], 'version, verdict refused, reason held, holder 0');
    assert.equal(b.readUInt32BE(8), pair);
    assert.equal(b.readUInt32BE(12), 6);
    assert.equal(b.readUInt32BE(16), 250);
    assert.deepEqual(b.subarray(20, 36), nonce);
    assert.deepEqual(b.subarray(36), createHmac('sha256', key).update(b.subarray(0, 36)).digest().subarray(0, 16));
    const g = encodeAnswer(key, { ...anAnswer, verdict: 'granted', reason: 'expired', holder: 1 });
    assert.deepEqual([...g.subarray(5, 8)], [1, 2, 1], 'verdict granted, reason expired, holder 1');
  });

  it('the pair id comes from the key: the same for the same key, different for another', () => {
    assert.equal(witnessPairId(Buffer.from(key)), pair);
    assert.notEqual(witnessPairId(randomBytes(32)), pair);
  });
});

describe('witness wire: round trips', () => {
  it('any claim round-trips', () => {
    fc.assert(
      fc.property(
        fc.record({
          ordinal: fc.constantFrom<0 | 1>(0, 1),
          pair: fc.nat({ max: 0xffffffff }),
          term: fc.nat({ max: 0xffffffff }),
          ttlMs: fc.integer({ min: 1, max: MAX_TTL_MS }),
          incarnation: fc.nat({ max: 2 ** 48 - 1 }),
          seq: fc.nat({ max: 0xffffffff }),
          nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((u) => Buffer.from(u)),
        }),
        (c) => assert.deepEqual(decodeClaim(key, encodeClaim(key, c)), { ...c }),
      ),
      { numRuns: 500, seed: 21 },
    );
  });

  it('any answer round-trips; a remaining time below zero is sent as 0', () => {
    for (const reason of ['free', 'renewal', 'expired'] as const) {
      const a: AnswerMessage = { ...anAnswer, verdict: 'granted', reason, holder: 1 };
      assert.deepEqual(decodeAnswer(key, encodeAnswer(key, a)), a);
    }
    assert.deepEqual(decodeAnswer(key, encodeAnswer(key, anAnswer)), anAnswer);
    const late = decodeAnswer(key, encodeAnswer(key, { ...anAnswer, remainingMs: -5 }));
    assert.equal(typeof late === 'string' ? late : late.remainingMs, 0);
  });

  it('encoding refuses values that do not fit their field', () => {
    assert.throws(() => encodeClaim(key, { ...aClaim, term: -1 }), RangeError);
    assert.throws(() => encodeClaim(key, { ...aClaim, term: 2 ** 32 }), RangeError);
    assert.throws(() => encodeClaim(key, { ...aClaim, ttlMs: 0 }), RangeError);
    assert.throws(() => encodeClaim(key, { ...aClaim, ttlMs: MAX_TTL_MS + 1 }), RangeError);
    assert.throws(() => encodeClaim(key, { ...aClaim, incarnation: 2 ** 48 }), RangeError);
    assert.throws(() => encodeClaim(key, { ...aClaim, nonce: nonce.subarray(1) }), RangeError);
    assert.throws(() => encodeAnswer(key, { ...anAnswer, holderTerm: 1.5 }), RangeError);
  });
});

describe('witness wire: hostile input', () => {
  const claimB = encodeClaim(key, aClaim);
  const answerB = encodeAnswer(key, anAnswer);

  it('a claim or answer under another key is refused (hmac)', () => {
    const other = randomBytes(32);
    assert.equal(decodeClaim(other, claimB), 'hmac');
    assert.equal(decodeAnswer(other, answerB), 'hmac');
    // Forged with a wrong key but the right pair id: only the HMAC tells.
    assert.equal(peekClaimPair(encodeClaim(other, aClaim)), pair);
    assert.equal(decodeClaim(key, encodeClaim(other, aClaim)), 'hmac');
  });

  it('every single flipped bit of a claim or answer is caught', () => {
    for (const [b, decode] of [
      [claimB, decodeClaim],
      [answerB, decodeAnswer],
    ] as const) {
      for (let bit = 0; bit < b.length * 8; bit++) {
        const bad = Buffer.from(b);
        bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
        const r = decode(key, bad);
        assert.equal(typeof r, 'string', `bit ${bit} slipped through`);
        assert.ok(['magic', 'version', 'hmac'].includes(r as string), `bit ${bit}: ${String(r)}`);
      }
    }
  });

  it('truncated, padded and empty datagrams are refused by size', () => {
    for (let n = 0; n < CLAIM_BYTES; n++) assert.equal(decodeClaim(key, claimB.subarray(0, n)), 'size');
    for (let n = 0; n < ANSWER_BYTES; n++) assert.equal(decodeAnswer(key, answerB.subarray(0, n)), 'size');
    assert.equal(decodeClaim(key, Buffer.concat([claimB, Buffer.alloc(1)])), 'size');
    assert.equal(decodeAnswer(key, Buffer.concat([answerB, Buffer.alloc(1)])), 'size');
  });

  it('an answer reflected as a claim, or a claim as an answer, or a heartbeat, is refused', () => {
    assert.equal(decodeClaim(key, answerB), 'size');
    assert.equal(decodeAnswer(key, claimB), 'size');
    // Same size, the other direction's magic: refused before the HMAC.
    const asClaim = Buffer.from(claimB);
    asClaim.write('SPWA', 0, 'latin1');
    assert.equal(decodeClaim(key, resign(asClaim)), 'magic');
    const asHeartbeat = Buffer.from(claimB);
    asHeartbeat.write('SPHB', 0, 'latin1');
    assert.equal(decodeClaim(key, resign(asHeartbeat)), 'magic');
    const v2 = Buffer.from(claimB);
    v2[4] = 2;
    assert.equal(decodeClaim(key, resign(v2)), 'version');
  });

  it('authentic but malformed fields are refused (field): a key holder cannot crash or confuse the other side', () => {
    const claimWith = (offset: number, bytes: number[]) => {
      const b = Buffer.from(claimB);
      Buffer.from(bytes).copy(b, offset);
      return resign(b);
    };
    assert.equal(decodeClaim(key, claimWith(5, [2])), 'field', 'ordinal 2');
    assert.equal(decodeClaim(key, claimWith(6, [0, 1])), 'field', 'reserved bits set');
    assert.equal(decodeClaim(key, claimWith(16, [0, 0, 0, 0])), 'field', 'ttl 0');
    assert.equal(decodeClaim(key, claimWith(16, [0xff, 0xff, 0xff, 0xff])), 'field', 'ttl above the maximum');
    const answerWith = (offset: number, v: number) => {
      const b = Buffer.from(answerB);
      b[offset] = v;
      return resign(b);
    };
    assert.equal(decodeAnswer(key, answerWith(5, 0)), 'field', 'verdict 0');
    assert.equal(decodeAnswer(key, answerWith(5, 3)), 'field', 'verdict 3');
    assert.equal(decodeAnswer(key, answerWith(6, 9)), 'field', 'unknown reason');
    assert.equal(decodeAnswer(key, answerWith(7, 2)), 'field', 'holder 2');
  });

  it('random bytes never throw and never decode', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 128 }), fc.boolean(), (u, magic) => {
        const b = Buffer.from(u);
        if (magic && b.length >= 4) b.write('SPWC', 0, 'latin1');
        assert.equal(typeof decodeClaim(key, b), 'string');
        assert.equal(typeof decodeAnswer(key, b), 'string');
        const p = peekClaimPair(b);
        assert.ok(typeof p === 'string' || b.length === CLAIM_BYTES);
      }),
      { numRuns: 2000, seed: 22 },
    );
  });

  it('the wire is stateless: a replayed datagram decodes again (the nonce and seq checks live in the endpoints)', () => {
    assert.deepEqual(decodeClaim(key, claimB), decodeClaim(key, Buffer.from(claimB)));
    assert.deepEqual(decodeAnswer(key, answerB), decodeAnswer(key, Buffer.from(answerB)));
  });
});
