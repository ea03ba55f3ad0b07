/**
 * Paces one client's TCP connection: a token bucket of messages (`rate` per
 * second, a burst of one second's worth). A client past it is not dropped
 * from (TCP requests are not retransmitted): the connection is paused until
 * the bucket has refilled, and TCP's own backpressure slows the client down
 * at no cost to us. So one connection pumping requests as fast as it can gets
 * `rate` of the pair's work, not all of it, and everyone else's latency holds.
 */
export class FlowPacer {
  private tokens: number;
  private last: number;
  private readonly rate: number;

  constructor(rate: number, now = performance.now()) {
    this.rate = rate;
    this.tokens = rate;
    this.last = now;
  }

  /** One message read; returns how long (ms) the connection should now pause, 0 for not at all. */
  take(now = performance.now()): number {
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }
}
