/**
 * Heartbeat freshness (sidecar/src/ha/beat-freshness.ts, issue 9 item 1):
 * recorded beats never count when replayed, restarts on either side still
 * find each other within a beat or two.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BeatFreshness, type BeatIds } from '../../sidecar/src/ha/beat-freshness.ts';

/** One side of a pair: its incarnation, its beat counter, and what it accepts. */
class Side {
  readonly f: BeatFreshness;
  readonly incarnation: number;
  private n = 0;
  constructor(incarnation: number) {
    this.incarnation = incarnation;
    this.f = new BeatFreshness(incarnation);
  }
  beat(): BeatIds {
    return { incarnation: this.incarnation, echo: this.f.echo(), beat: ++this.n };
  }
}

/** Beats both ways until each counts the other's; how many rounds that took. */
function handshake(x: Side, y: Side): number {
  for (let round = 1; round <= 5; round++) {
    const okY = y.f.judge(x.beat(), false) === null;
    const okX = x.f.judge(y.beat(), false) === null;
    if (okX && okY) return round;
  }
  return Infinity;
}

describe('heartbeat freshness', () => {
  it('two fresh starts count each other within two rounds', () => {
    assert.ok(handshake(new Side(1000), new Side(1001)) <= 2);
  });

  it('a beat that does not echo our incarnation (made before we started) does not count', () => {
    const me = new Side(2000);
    assert.equal(me.f.judge({ incarnation: 1500, echo: 1999, beat: 7 }, true), 'unechoed');
  });

  it('replays of this start (same or lower counter) do not count; the latest again is a duplicate (its second path)', () => {
    const a = new Side(1000);
    const b = new Side(1001);
    handshake(a, b);
    const old = a.beat();
    assert.equal(b.f.judge(old, false), null);
    assert.equal(b.f.judge(old, false), 'duplicate');
    assert.equal(b.f.judge({ ...old, beat: old.beat - 1 }, false), 'old-beat');
  });

  it("the peer restarts: its new start is followed, the old start's beats never count again", () => {
    const a1 = new Side(1000);
    const b = new Side(1001);
    handshake(a1, b);
    const recorded = [a1.beat(), a1.beat(), a1.beat()];
    for (const r of recorded) b.f.judge(r, false);
    const a2 = new Side(5000);
    assert.ok(handshake(a2, b) <= 3, 'the restarted peer is found');
    for (const r of recorded) assert.equal(b.f.judge({ ...r, beat: r.beat + 100 }, false), 'retired');
  });

  it('a recording of an earlier start we never followed is older than the live peer: refused while it beats', () => {
    const b = new Side(1001);
    const a2 = new Side(5000);
    handshake(a2, b);
    // Made during our start (it echoes us) by a start of the peer older than the live one.
    assert.equal(b.f.judge({ incarnation: 4000, echo: 1001, beat: 99 }, false), 'older');
  });

  it('a restarted peer whose clock stepped back is followed once its predecessor is silent', () => {
    const a1 = new Side(5000);
    const b = new Side(1001);
    handshake(a1, b);
    const a2 = new Side(4000);
    assert.equal(handshake(a2, b), Infinity, 'not while the predecessor counts as alive');
    assert.equal(b.f.judge(a2.beat(), true), null, 'followed once the predecessor is silent');
  });

  it('we restart: the live peer finds us again, and its beats recorded before our restart never count', () => {
    const a = new Side(1000);
    const b1 = new Side(1001);
    handshake(a, b1);
    const recorded = [a.beat(), a.beat()];
    const b2 = new Side(6000);
    assert.ok(handshake(a, b2) <= 3);
    for (const r of recorded) assert.equal(b2.f.judge(r, true), 'unechoed');
  });

  it('property: any beat sent earlier and replayed later, across any restarts, never counts', () => {
    type Step = { kind: 'beat' } | { kind: 'restart-a' } | { kind: 'restart-b' } | { kind: 'replay'; pick: number };
    const step = fc.oneof(
      fc.constant<Step>({ kind: 'beat' }),
      fc.constant<Step>({ kind: 'restart-a' }),
      fc.constant<Step>({ kind: 'restart-b' }),
      fc.nat().map<Step>((pick) => ({ kind: 'replay', pick })),
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 80 }), (steps) => {
        let clock = 1000;
        let a = new Side(clock++);
        let b = new Side(clock++);
        const sentByA: BeatIds[] = [];
        for (const s of steps) {
          if (s.kind === 'restart-a') a = new Side(clock++);
          else if (s.kind === 'restart-b') b = new Side(clock++);
          else if (s.kind === 'beat') {
            // Every beat is delivered at once (so a recording holds nothing b has not seen).
            const x = a.beat();
            sentByA.push(x);
            b.f.judge(x, false);
            a.f.judge(b.beat(), false);
          } else if (sentByA.length > 0) {
            const r = sentByA[s.pick % sentByA.length] as BeatIds;
            // Silent or not: a replay must not count either way.
            assert.notEqual(b.f.judge(r, false), null, `replayed ${JSON.stringify(r)} counted`);
            assert.notEqual(b.f.judge(r, true), null, `replayed ${JSON.stringify(r)} counted (peer silent)`);
          }
        }
      }),
      { numRuns: 500 },
    );
  });
});
