/**
 * Why a message was rejected. Stable codes: they are metric label values
 * (`sipha_messages_dropped_total{reason}`), log fields and what tests assert.
 */
export const REJECT_REASONS = [
  'empty',
  'too-large',
  'truncated',
  'start-line',
  'method',
  'request-uri',
  'version',
  'status-code',
  'header-syntax',
  'too-many-headers',
  'missing-header',
  'duplicate-header',
  'content-length',
  'cseq',
  'max-forwards',
  'via',
  'name-addr',
  'scalar-range',
  'date',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** A failed parse: no exception crosses the hot path, a value does. */
export interface Rejection {
  readonly ok: false;
  readonly reason: RejectReason;
  /** Human-readable detail for logs (never a metric label: unbounded). */
  readonly detail: string;
}

export function reject(reason: RejectReason, detail: string): Rejection {
  return { ok: false, reason, detail };
}
