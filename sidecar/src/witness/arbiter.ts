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
      /** The claim asked for a longer lease than this arbiter grants (SIPHA_WITNESS_MAX_TTL_MS). */
      readonly capped: boolean;
    }
  | { readonly kind: 'drop'; readonly reason: string };

interface ReplayMark {
  incarnation: number;
  seq: number;
}

export interface ArbiterTiming {
  /** The longest lease granted; a claim for more gets that much. */
  readonly maxTtlMs: number;
  /** When this process started (the clock of `handle`'s `now`). */
  readonly startedAt: number;
}

export class Arbiter {
  private readonly key: Buffer;
  readonly pair: number;
  private record: WitnessRecord | null = null;
  private readonly marks: [ReplayMark | null, ReplayMark | null] = [null, null];
  private readonly maxTtlMs: number;
  /**
   * No claim is answered before then. The record lives in memory: a restarted
   * arbiter does not know the lease it may have granted just before, and a
   * master cut off from its peer serves on to that lease's end. Granting the
   * other side then would make two masters; any lease from before the start
   * has run out once the longest one it could be has (decision 0005).
   */
  readonly answersFrom: number;

  /** `key`: the witness key (contract/witness-wire.ts witnessKey), not the pair's replication key. */
  constructor(key: Buffer, timing: ArbiterTiming) {
    this.key = key;
    this.pair = witnessPairId(key);
    this.maxTtlMs = timing.maxTtlMs;
    this.answersFrom = timing.startedAt + timing.maxTtlMs;
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
    // Before the replay mark: an unanswered claim must not block the side's next one.
    if (now < this.answersFrom) return { kind: 'drop', reason: 'starting' };
    // A replayed claim could renew a dead holder's lease: only newer claims of a
    // client (later incarnation, or same one and higher seq) count.
    const mark = this.marks[claim.ordinal];
    if (mark && (claim.incarnation < mark.incarnation || (claim.incarnation === mark.incarnation && claim.seq <= mark.seq))) {
      return { kind: 'drop', reason: 'replay' };
    }
    this.marks[claim.ordinal] = { incarnation: claim.incarnation, seq: claim.seq };

    const before = this.record;
    // A longer lease than it grants is granted as long as it grants (its quiet period after a
    // restart covers no more); the client counts its lease from the answer's remainingMs.
    const capped = claim.ttlMs > this.maxTtlMs;
    const decision = decideClaim(before, capped ? { ...claim, ttlMs: this.maxTtlMs } : claim, now);
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
    return { kind: 'answer', answer, claim, decision, holderChanged, capped };
  }
}
