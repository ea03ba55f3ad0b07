/**
 * The UDP witness's decision core with no socket: what it answers, what it
 * drops and why, that a replayed claim cannot renew a lease, and that no
 * input makes it throw or grow.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type AnswerMessage, decodeAnswer, encodeClaim, witnessKey, witnessPairId } from '../../contract/witness-wire.ts';
import { Arbiter } from '../../sidecar/src/witness/arbiter.ts';
import { loadWitnessConfig } from '../../sidecar/src/witness/config.ts';

const key = randomBytes(32); // the witness key (what the arbiter holds)
const pair = witnessPairId(key);

function claimBytes(ordinal: 0 | 1, term: number, o: { incarnation?: number; seq: number; ttlMs?: number; k?: Buffer }) {
  const nonce = randomBytes(16);
  const bytes = encodeClaim(o.k ?? key, {
    ordinal,
    pair,
    term,
    ttlMs: o.ttlMs ?? 1000,
    incarnation: o.incarnation ?? 1,
    seq: o.seq,
    nonce,
  });
  return { bytes, nonce };
}

function answerOf(a: Arbiter, b: Buffer, now: number): AnswerMessage {
  const r = a.handle(b, now);
  assert.equal(r.kind, 'answer', r.kind === 'drop' ? r.reason : '');
  const ans = decodeAnswer(key, (r as Extract<typeof r, { kind: 'answer' }>).answer);
  assert.notEqual(typeof ans, 'string');
  return ans as AnswerMessage;
}

/** An arbiter past its start-up quiet period (it started a max ttl before 0, the tests' first instant). */
const settled = () => new Arbiter(key, { maxTtlMs: 60_000, startedAt: -60_000 });

describe('arbiter', () => {
  it('answers with the verdict, the holder and the claim’s own nonce', () => {
    const a = settled();
    const c0 = claimBytes(0, 2, { seq: 1 });
    const g = answerOf(a, c0.bytes, 0);
    assert.deepEqual(
      { ...g, nonce: Buffer.from(g.nonce) },
      {
        verdict: 'granted',
        reason: 'free',
        holder: 0,
        pair,
        holderTerm: 2,
        remainingMs: 1000,
        nonce: c0.nonce,
      },
    );
    const c1 = claimBytes(1, 1, { seq: 1 });
    const r = answerOf(a, c1.bytes, 400);
    assert.equal(r.verdict, 'refused');
    assert.equal(r.holder, 0);
    assert.equal(r.holderTerm, 2);
    assert.equal(r.remainingMs, 600);
    assert.deepEqual(Buffer.from(r.nonce), c1.nonce);
    // A higher term does not take the unexpired lease; once it ran out (1000), the other side gets it.
    assert.equal(answerOf(a, claimBytes(1, 3, { seq: 2 }).bytes, 500).verdict, 'refused');
    assert.equal(answerOf(a, claimBytes(1, 3, { seq: 3 }).bytes, 1000).reason, 'expired');
    assert.deepEqual(a.lease, { holder: 1, term: 3, expiresAt: 2000 });
  });

  it('reports when the holder changes (the process logs it), not on renewals or refusals', () => {
    const a = settled();
    const changed = (b: Buffer, now: number) => {
      const r = a.handle(b, now);
      return r.kind === 'answer' && r.holderChanged;
    };
    assert.equal(changed(claimBytes(0, 2, { seq: 1 }).bytes, 0), true);
    assert.equal(changed(claimBytes(0, 2, { seq: 2 }).bytes, 10), false);
    assert.equal(changed(claimBytes(1, 1, { seq: 1 }).bytes, 20), false);
    assert.equal(changed(claimBytes(1, 3, { seq: 2 }).bytes, 30), false);
    assert.equal(changed(claimBytes(1, 3, { seq: 3 }).bytes, 5000), true);
  });

  it('drops a replayed claim (same or older seq, older incarnation), so a recorded claim cannot renew a dead holder', () => {
    const a = settled();
    const first = claimBytes(0, 2, { incarnation: 100, seq: 7 });
    answerOf(a, first.bytes, 0);
    assert.deepEqual(a.handle(first.bytes, 2000), { kind: 'drop', reason: 'replay' });
    assert.deepEqual(a.handle(claimBytes(0, 2, { incarnation: 100, seq: 6 }).bytes, 2000), { kind: 'drop', reason: 'replay' });
    assert.deepEqual(a.handle(claimBytes(0, 2, { incarnation: 99, seq: 50 }).bytes, 2000), { kind: 'drop', reason: 'replay' });
    // The lease was not renewed by any of them: it expired at 1000, the other side gets it.
    assert.equal(answerOf(a, claimBytes(1, 1, { seq: 1 }).bytes, 2000).reason, 'expired');
    // A restarted client (later incarnation) starts its seq again (refused here: side 1 holds the lease now).
    assert.equal(answerOf(a, claimBytes(0, 4, { incarnation: 101, seq: 1 }).bytes, 2001).verdict, 'refused');
  });

  it('replay marks are per side: one side’s sequence does not block the other', () => {
    const a = settled();
    answerOf(a, claimBytes(0, 2, { seq: 50 }).bytes, 0);
    // Answered (refused: side 0 holds it), not dropped as a replay.
    assert.equal(answerOf(a, claimBytes(1, 3, { seq: 1 }).bytes, 1).verdict, 'refused');
  });

  it('drops another pair’s claim before the HMAC, and a forged one with this pair’s id by the HMAC', () => {
    const a = settled();
    const other = randomBytes(32);
    const foreign = encodeClaim(other, {
      ordinal: 0,
      pair: witnessPairId(other),
      term: 9,
      ttlMs: 1000,
      incarnation: 1,
      seq: 1,
      nonce: randomBytes(16),
    });
    assert.deepEqual(a.handle(foreign, 0), { kind: 'drop', reason: 'pair' });
    assert.deepEqual(a.handle(claimBytes(0, 9, { seq: 1, k: other }).bytes, 0), { kind: 'drop', reason: 'hmac' });
    assert.equal(a.lease, null, 'nothing forged changed the lease');
    // A forged claim does not advance the replay mark either: the real seq 1 still counts.
    assert.equal(answerOf(a, claimBytes(0, 2, { seq: 1 }).bytes, 0).verdict, 'granted');
  });

  it('never throws, and only authentic claims change its (single) record, whatever arrives', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 100 }).map((u) => ({ kind: 'junk' as const, b: Buffer.from(u) })),
            fc
              .record({ ord: fc.constantFrom<0 | 1>(0, 1), term: fc.nat(20), flip: fc.nat(61) })
              .map((x) => ({ kind: 'flipped' as const, ...x })),
            fc.record({ ord: fc.constantFrom<0 | 1>(0, 1), term: fc.nat(20) }).map((x) => ({ kind: 'real' as const, ...x })),
          ),
          { maxLength: 40 },
        ),
        (inputs) => {
          const a = settled();
          let seq = 0;
          let now = 0;
          for (const i of inputs) {
            now += 7;
            const before = a.lease;
            if (i.kind === 'junk') {
              assert.equal(a.handle(i.b, now).kind, 'drop');
            } else if (i.kind === 'flipped') {
              const b = Buffer.from(claimBytes(i.ord, i.term, { seq: ++seq }).bytes);
              b[i.flip] = (b[i.flip] as number) ^ 0x01;
              assert.equal(a.handle(b, now).kind, 'drop');
            } else {
              assert.equal(a.handle(claimBytes(i.ord, i.term, { seq: ++seq }).bytes, now).kind, 'answer');
              continue;
            }
            assert.deepEqual(a.lease, before);
          }
        },
      ),
      { numRuns: 500, seed: 31 },
    );
  });
});

describe('arbiter after a restart', () => {
  // A restarted arbiter has forgotten the lease it may have granted just before: a
  // master cut off from its peer serves on to that lease's end, so a grant to the
  // other side then would make two masters (decision 0005). It answers nothing for
  // the longest lease it grants, counted from its start.
  it('answers no claim, from either side, until the longest lease it grants has run out since its start', () => {
    const a = new Arbiter(key, { maxTtlMs: 1000, startedAt: 5000 });
    assert.deepEqual(a.handle(claimBytes(1, 9, { seq: 1 }).bytes, 5000), { kind: 'drop', reason: 'starting' });
    assert.deepEqual(a.handle(claimBytes(0, 3, { seq: 1 }).bytes, 5999), { kind: 'drop', reason: 'starting' });
    assert.equal(a.lease, null);
    // Unanswered claims leave no replay mark: the side's next claim counts.
    const g = answerOf(a, claimBytes(1, 9, { seq: 2 }).bytes, 6000);
    assert.equal(g.verdict, 'granted');
    assert.equal(g.reason, 'free');
    assert.equal(answerOf(a, claimBytes(0, 3, { seq: 2 }).bytes, 6001).verdict, 'refused');
  });

  it('grants a claim for a longer lease than it grants only as long as it grants (its quiet period after a restart covers no more)', () => {
    const a = new Arbiter(key, { maxTtlMs: 1000, startedAt: -1000 });
    const r = a.handle(claimBytes(0, 2, { seq: 1, ttlMs: 5000 }).bytes, 0);
    assert.equal(r.kind === 'answer' && r.capped, true, 'said, so the process warns');
    const g = decodeAnswer(key, (r as Extract<typeof r, { kind: 'answer' }>).answer) as AnswerMessage;
    assert.deepEqual([g.verdict, g.remainingMs], ['granted', 1000]);
    assert.deepEqual(a.lease, { holder: 0, term: 2, expiresAt: 1000 });
    // The client counts its lease from remainingMs, not from what it asked for.
    const ok = a.handle(claimBytes(0, 2, { seq: 2, ttlMs: 1000 }).bytes, 10);
    assert.equal(ok.kind === 'answer' && ok.capped, false);
  });
});

describe('arbiter configuration', () => {
  const pairKey = randomBytes(32);
  const base = { SIPHA_WITNESS_LISTEN: '127.0.0.1:7000' };

  it('holds the derived witness key whether given the pair key or the derived one', () => {
    const fromPair = loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: pairKey.toString('base64') });
    const fromDerived = loadWitnessConfig({ ...base, SIPHA_WITNESS_KEY: witnessKey(pairKey).toString('base64') });
    assert.deepEqual(fromPair.key, witnessKey(pairKey));
    assert.deepEqual(fromDerived.key, witnessKey(pairKey));
    assert.notDeepEqual(fromPair.key, pairKey);
    assert.deepEqual(fromPair.listen, { address: '127.0.0.1', port: 7000 });
    assert.equal(fromPair.http, null);
    assert.equal(fromPair.maxTtlMs, 2000, 'twice the sidecars’ default lease (SIPHA_WITNESS_TTL_MS)');
    assert.equal(
      loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: pairKey.toString('base64'), SIPHA_WITNESS_MAX_TTL_MS: '5000' })
        .maxTtlMs,
      5000,
    );
  });

  it('refuses bad settings with the variable’s name', () => {
    const k = pairKey.toString('base64');
    assert.throws(() => loadWitnessConfig({ SIPHA_REPLICATION_KEY: k }), /SIPHA_WITNESS_LISTEN is required/);
    assert.throws(() => loadWitnessConfig({ ...base }), /SIPHA_WITNESS_KEY or SIPHA_REPLICATION_KEY is required/);
    assert.throws(() => loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: k, SIPHA_WITNESS_KEY: k }), /not both/);
    assert.throws(() => loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: `${k},${k}` }), /one pair per witness/);
    assert.throws(() => loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: 'c2hvcnQ=' }), /at least 16 bytes/);
    assert.throws(() => loadWitnessConfig({ SIPHA_WITNESS_LISTEN: 'localhost:7000', SIPHA_REPLICATION_KEY: k }), /ipv4:port/);
    assert.throws(() => loadWitnessConfig({ SIPHA_WITNESS_LISTEN: '127.0.0.1:70000', SIPHA_REPLICATION_KEY: k }), /ipv4:port/);
    for (const bad of ['0', '99', '60001', '1.5', 'x'])
      assert.throws(
        () => loadWitnessConfig({ ...base, SIPHA_REPLICATION_KEY: k, SIPHA_WITNESS_MAX_TTL_MS: bad }),
        /SIPHA_WITNESS_MAX_TTL_MS/,
      );
  });
});
