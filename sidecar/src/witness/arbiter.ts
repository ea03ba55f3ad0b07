/**
 * The UDP witness's decision core, with no socket: a datagram in, an answer
 * (or a drop reason) out. State is bounded: one lease record for the pair and
 * one replay mark per ordinal. Total on any input: it never throws on what
 * arrives from the network.
 */
import { type ClaimMessage, decodeClaim, encodeAnswer, peekClaimPair, witnessPairId } from '../../../contract/witness-wire.ts';
import { type ClaimDecision, decideClaim, type WitnessRecord } from '../ha/witness.ts';

export type ArbiterResult =
  | {
      readonly kind: 'answer';
      readonly answer: Buffer;
      readonly claim: ClaimMessage;
      readonly decision: ClaimDecision;
      readonly holderChanged: boolean;
    }
  | { readonly kind: 'drop'; readonly reason: string };

interface ReplayMark {
  incarnation: number;
  seq: number;
}

export class Arbiter {
  private readonly key: Buffer;
  readonly pair: number;
  private record: WitnessRecord | null = null;
  private readonly marks: [ReplayMark | null, ReplayMark | null] = [null, null];

  /** `key`: the witness key (contract/witness-wire.ts witnessKey), not the pair's replication key. */
  constructor(key: Buffer) {
    this.key = key;
    this.pair = witnessPairId(key);
  }

  /** The current lease (null when nobody ever held it). */
  get lease(): WitnessRecord | null {
    return this.record;
  }

  /** `now`: monotonic ms (performance.now() in the process). */
  handle(datagram: Buffer, now: number): ArbiterResult {
    const pair = peekClaimPair(datagram);
    if (typeof pair === 'string') return { kind: 'drop', reason: pair };
    // Another pair's claim: refused before paying for an HMAC.
    if (pair !== this.pair) return { kind: 'drop', reason: 'pair' };
    const claim = decodeClaim(this.key, datagram);
    if (typeof claim === 'string') return { kind: 'drop', reason: claim };
    // A replayed claim could renew a dead holder's lease: only newer claims of a
    // client (later incarnation, or same one and higher seq) count.
    const mark = this.marks[claim.ordinal];
    if (mark && (claim.incarnation < mark.incarnation || (claim.incarnation === mark.incarnation && claim.seq <= mark.seq))) {
      return { kind: 'drop', reason: 'replay' };
    }
    this.marks[claim.ordinal] = { incarnation: claim.incarnation, seq: claim.seq };

    const before = this.record;
    const decision = decideClaim(before, claim, now);
    if (decision.outcome === 'granted') this.record = decision.record;
    const r = decision.record;
    const common = { holder: r.holder, pair: this.pair, holderTerm: r.term, remainingMs: r.expiresAt - now, nonce: claim.nonce };
    const answer = encodeAnswer(
      this.key,
      decision.outcome === 'granted'
        ? { verdict: 'granted', reason: decision.reason, ...common }
        : { verdict: 'refused', reason: decision.reason, ...common },
    );
    const holderChanged = decision.outcome === 'granted' && (before === null || before.holder !== r.holder);
    return { kind: 'answer', answer, claim, decision, holderChanged };
  }
}
