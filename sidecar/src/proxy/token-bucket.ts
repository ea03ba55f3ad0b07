/**
 * The token bucket the edge's limits share (per-address requests, per-address
 * connections, per-connection pacing): `rate` tokens a second, up to `burst`.
 * Tokens below zero are a debt: what was taken ahead of the rate, which a
 * paused connection waits out.
 */
export interface Bucket {
  tokens: number;
  /** When it was last refilled (ms, performance.now()). */
  last: number;
}

/** Adds what `rate` a second brought since the last refill, up to `burst`. */
export function refill(b: Bucket, now: number, rate: number, burst: number): void {
  b.tokens = Math.min(burst, b.tokens + ((now - b.last) * rate) / 1000);
  b.last = now;
}

/** How long until a bucket in debt is back to zero at `rate` a second (ms; 0: not in debt). */
export function debtMs(b: Bucket, rate: number): number {
  return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / rate);
}
