/**
 * The witness's grant rule (decideClaim): examples for every reason, and
 * properties over random claim sequences from the two sides of a pair (each
 * with terms of its own parity, at random times, with random lease lengths).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decideClaim, type WitnessClaim, type WitnessRecord } from '../../sidecar/src/ha/witness.ts';

const rec = (holder: 0 | 1, term: number, expiresAt: number): WitnessRecord => ({ holder, term, expiresAt });
const claim = (ordinal: 0 | 1, term: number, ttlMs = 1000): WitnessClaim => ({ ordinal, term, ttlMs });

describe('witness grant rule: every reason', () => {
  it('free: nobody holds it', () => {
    const d = decideClaim(null, claim(1, 3, 500), 100);
    assert.deepEqual(d, { outcome: 'granted', reason: 'free', record: rec(1, 3, 600) });
  });

  it('renewal: the holder claims again, its lease restarts, its term may rise but not fall', () => {
    assert.deepEqual(decideClaim(rec(0, 2, 1000), claim(0, 2), 900), {
      outcome: 'granted',
      reason: 'renewal',
      record: rec(0, 2, 1900),
    });
    assert.deepEqual(decideClaim(rec(0, 2, 1000), claim(0, 4), 900).record, rec(0, 4, 1900));
    // ...and never falls, nor does the lease shorten: a restarted holder claiming with less keeps both.
    assert.deepEqual(decideClaim(rec(0, 4, 1000), claim(0, 2), 900).record, rec(0, 4, 1900));
    assert.deepEqual(decideClaim(rec(0, 4, 5000), claim(0, 4, 100), 900).record, rec(0, 4, 5000));
  });

  it('held: another side holds an unexpired lease; the answer names it', () => {
    const held = rec(0, 4, 1000);
    assert.deepEqual(decideClaim(held, claim(1, 3), 999), { outcome: 'refused', reason: 'held', record: held });
    assert.equal(decideClaim(held, claim(1, 4), 999).outcome, 'refused');
  });

  it('a higher term does not take an unexpired lease: the holder keeps it while it renews (no outbidding, no flap)', () => {
    assert.deepEqual(decideClaim(rec(0, 4, 1000), claim(1, 5), 10).outcome, 'refused');
    assert.deepEqual(decideClaim(rec(0, 4, 1000), claim(1, 99), 999).outcome, 'refused');
  });

  it('expired: at the expiry instant the lease is free for anyone, whatever the terms', () => {
    assert.equal(decideClaim(rec(0, 8, 1000), claim(1, 1), 999).outcome, 'refused');
    const d = decideClaim(rec(0, 8, 1000), claim(1, 1), 1000);
    assert.equal(d.outcome, 'granted');
    assert.equal(d.reason, 'expired');
  });
});

/** A claim in a random history: who, which of its own terms, after how long, for how long. */
const arbClaim = fc.record({
  ordinal: fc.constantFrom<0 | 1>(0, 1),
  k: fc.integer({ min: 0, max: 12 }),
  dt: fc.integer({ min: 0, max: 400 }),
  ttlMs: fc.integer({ min: 1, max: 1000 }),
});

interface Grant {
  ordinal: 0 | 1;
  term: number;
  at: number;
  expiresAt: number;
}

describe('witness grant rule: properties', () => {
  it('never two unexpired holders: nothing is granted while the other side still holds an unexpired lease', () => {
    // Each side asks for its one configured ttl (the clients have no other), so a side's latest grant is its longest.
    fc.assert(
      fc.property(
        fc.array(arbClaim, { maxLength: 60 }),
        fc.tuple(fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 1000 })),
        (history, ttls) => {
          let record: WitnessRecord | null = null;
          let now = 0;
          const latest: [Grant | null, Grant | null] = [null, null];
          for (const h of history) {
            now += h.dt;
            const c = claim(h.ordinal, 2 * h.k + h.ordinal, ttls[h.ordinal]);
            const d = decideClaim(record, c, now);
            if (d.outcome === 'granted') {
              const other = latest[c.ordinal === 0 ? 1 : 0];
              if (other && other.expiresAt > now) assert.fail(`two holders at ${now}`);
              latest[c.ordinal] = { ordinal: c.ordinal, term: d.record.term, at: now, expiresAt: d.record.expiresAt };
              record = d.record;
            }
            // A side that believes it holds the lease is the witness's holder.
            const live = latest.filter((g): g is Grant => g !== null && g.expiresAt > now);
            assert.ok(live.length <= 1);
            if (live.length === 1) assert.equal(record?.holder, (live[0] as Grant).ordinal);
          }
        },
      ),
      { numRuns: 3000, seed: 5 },
    );
  });

  it('a refusal is always justified: another side, unexpired; and it changes nothing', () => {
    fc.assert(
      fc.property(fc.array(arbClaim, { maxLength: 60 }), (history) => {
        let record: WitnessRecord | null = null;
        let now = 0;
        for (const h of history) {
          now += h.dt;
          const c = claim(h.ordinal, 2 * h.k + h.ordinal, h.ttlMs);
          const before: WitnessRecord | null =
            record === null ? null : Object.freeze<WitnessRecord>({ ...(record as WitnessRecord) });
          const d = decideClaim(before, c, now);
          if (d.outcome === 'refused') {
            assert.ok(before);
            assert.notEqual(before.holder, c.ordinal);
            assert.ok(now < before.expiresAt);
            assert.deepEqual(d.record, before);
          } else {
            const held: WitnessRecord | null = before?.holder === c.ordinal ? before : null;
            const term: number = held ? Math.max(held.term, c.term) : c.term;
            const expiresAt: number = held ? Math.max(held.expiresAt, now + c.ttlMs) : now + c.ttlMs;
            assert.deepEqual(d.record, { holder: c.ordinal, term, expiresAt });
            record = d.record;
          }
        }
      }),
      { numRuns: 3000, seed: 6 },
    );
  });

  it('renewal always works; an expired or free lease is anyone’s; an unexpired one is its holder’s', () => {
    fc.assert(
      fc.property(fc.array(arbClaim, { maxLength: 60 }), (history) => {
        let record: WitnessRecord | null = null;
        let now = 0;
        for (const h of history) {
          now += h.dt;
          const c = claim(h.ordinal, 2 * h.k + h.ordinal, h.ttlMs);
          const d = decideClaim(record, c, now);
          if (record?.holder === c.ordinal) assert.equal(d.reason, 'renewal');
          if (record === null || now >= record.expiresAt) assert.equal(d.outcome, 'granted');
          else if (record.holder !== c.ordinal) assert.equal(d.outcome, 'refused');
          if (d.outcome === 'granted') record = d.record;
        }
      }),
      { numRuns: 3000, seed: 7 },
    );
  });

  it('a side that keeps claiming gets the lease at its first claim after the silent holder’s lease ran out', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 300 }),
        (kHolder, kClaimant, ttlMs, every) => {
          const holderTerm = 2 * kHolder;
          let record: WitnessRecord | null = decideClaim(null, claim(0, holderTerm, ttlMs), 0).record;
          let now = 0;
          let grantedAt = -1;
          while (grantedAt < 0) {
            now += every;
            const d = decideClaim(record, claim(1, 2 * kClaimant + 1, ttlMs), now);
            if (d.outcome === 'granted') {
              grantedAt = now;
              record = d.record;
            }
          }
          // Exactly: at the first claim on or after the expiry, whatever the terms.
          const expected = Math.ceil(ttlMs / every) * every;
          assert.equal(grantedAt, expected);
        },
      ),
      { numRuns: 2000, seed: 8 },
    );
  });
});
