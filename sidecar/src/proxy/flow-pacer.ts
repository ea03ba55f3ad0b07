import { type Bucket, debtMs, refill } from './token-bucket.ts';

/**
 * Paces one client's TCP connection: a token bucket of messages (`rate` per
 * second, a burst of one second's worth). A client past it is not dropped
 * from (TCP requests are not retransmitted): the connection is paused until
 * the bucket has refilled, and TCP's own backpressure slows the client down
 * at no cost to us. So one connection pumping requests as fast as it can gets
 * `rate` of the pair's work, not all of it, and everyone else's latency holds.
 */
export class FlowPacer {
  private readonly bucket: Bucket;
  private readonly rate: number;

  constructor(rate: number, now = performance.now()) {
    this.rate = rate;
    this.bucket = { tokens: rate, last: now };
  }

  /** One message read; returns how long (ms) the connection should now pause, 0 for not at all. */
  take(now = performance.now()): number {
    refill(this.bucket, now, this.rate, this.rate);
    this.bucket.tokens -= 1;
    return debtMs(this.bucket, this.rate);
  }
}
