/**
 * The witness: a third party that says which side of a pair may serve when
 * a side has lost its peer's heartbeats and so has no evidence either way
 * (silence is not evidence of death). Two implementations stand behind
 * `Witness`: a UDP arbiter (witness-udp.ts, outside a cluster) and a
 * Kubernetes Lease (kube/lease-witness.ts, in a cluster). Both decide with
 * the one pure rule below, `decideClaim`.
 *
 * Not wired into the role machine here: roles.ts takes the verdicts as events.
 */
import type { GrantReason, RefuseReason } from '../../../contract/witness-wire.ts';

export type { GrantReason, RefuseReason } from '../../../contract/witness-wire.ts';

/** What the witness holds for a pair: one record, never more. */
export interface WitnessRecord {
  readonly holder: 0 | 1;
  readonly term: number;
  /** Same clock as `now` in decideClaim (the witness's own monotonic ms). */
  readonly expiresAt: number;
}

export interface WitnessClaim {
  readonly ordinal: 0 | 1;
  readonly term: number;
  readonly ttlMs: number;
}

export type ClaimDecision =
  | { readonly outcome: 'granted'; readonly reason: GrantReason; readonly record: WitnessRecord }
  /** `record` is the unchanged holder's. */
  | { readonly outcome: 'refused'; readonly reason: RefuseReason; readonly record: WitnessRecord };

/**
 * The grant rule. Granted when nobody holds the lease, the claimant already
 * holds it (a renewal; its term may rise), or the holder's lease expired.
 * Refused while the other side holds an unexpired lease, whatever the terms:
 * the side that holds the lease keeps it as long as it renews. (A newer term
 * taking an unexpired lease made two sides that had both stood down outbid
 * each other with ever higher terms, each takeover refusing the other's next
 * renewal: a flap every few tens of ms, found by the faults bench.) A side
 * that stopped renewing (dead, or cut off from the witness) loses the lease
 * one ttl after its last grant.
 */
export function decideClaim(record: WitnessRecord | null, claim: WitnessClaim, now: number): ClaimDecision {
  const granted = (reason: GrantReason, term = claim.term, expiresAt = now + claim.ttlMs): ClaimDecision => ({
    outcome: 'granted',
    reason,
    record: { holder: claim.ordinal, term, expiresAt },
  });
  if (record === null) return granted('free');
  // A renewal never lowers the term or shortens the lease on record: the holder
  // may still act on an earlier grant (a restarted holder may claim with less).
  if (record.holder === claim.ordinal)
    return granted('renewal', Math.max(record.term, claim.term), Math.max(record.expiresAt, now + claim.ttlMs));
  if (now >= record.expiresAt) return granted('expired');
  return { outcome: 'refused', reason: 'held', record };
}

/**
 * A witness's answer to one claim, as the sidecar sees it. Times are local
 * `performance.now()` ms. `claim()` never rejects: every failure is
 * `unreachable` with a reason (and the error, if there was one, for `{ err }`).
 */
export type WitnessVerdict =
  | {
      readonly verdict: 'granted';
      readonly reason: GrantReason;
      /** The term the witness holds us at (our claim's, or higher on a renewal). */
      readonly term: number;
      /**
       * The lease is ours until then, counted from when the claim was sent
       * (so never later than the witness's own expiry).
       */
      readonly validUntil: number;
    }
  | {
      readonly verdict: 'refused';
      readonly reason: RefuseReason;
      readonly holder: 0 | 1;
      readonly holderTerm: number;
      /** How long the holder's lease still runs, as the witness saw it. */
      readonly remainingMs: number;
    }
  | { readonly verdict: 'unreachable'; readonly reason: string; readonly err?: Error };

export interface Witness {
  /** Claim (or renew) the pair's witness lease at `term`. Never rejects. */
  claim(term: number): Promise<WitnessVerdict>;
  /** Ends the witness: claims in flight and later answer `unreachable` ('closed'). */
  close(): void;
}
