/**
 * How fast one remote address may send messages (requests and responses
 * alike: a response is as easy to forge, and costs the server as much to
 * match), over every transport
 * together (issue 9; Kamailio's pike, in front of the server instead of in
 * it, so both servers of the pair see the same messages: the master decides
 * before it replicates, and a dropped request is neither served nor
 * replicated). A token bucket per address: `rate` a second after a burst of
 * `burst`. Over UDP a request past it is dropped (the client sends it again,
 * as after any loss); over TCP nothing is dropped (TCP requests are not sent
 * again): the connection is paused until the address's bucket has refilled,
 * and every connection of the address shares the one bucket, so opening more
 * connections buys no more rate.
 *
 * Bounded: at most `maxAddresses` are remembered, the oldest first to go. An
 * address forgotten starts again with a full bucket: to reset its own an
 * attacker must send from `maxAddresses` other addresses, which is the
 * pair's capacity (a firewall's job), not one address's.
 */
export interface AddressRateLimits {
  /** Requests a second one address may send; 0: no limit. */
  rate: number;
  /** Requests it may send at once before the rate holds (a NAT's phones after an outage). */
  burst: number;
  maxAddresses: number;
}

/** The longest a connection is paused for its address's debt (s). */
const MAX_DEBT_S = 30;

interface Bucket {
  tokens: number;
  last: number;
}

export class AddressRate {
  private readonly buckets = new Map<string, Bucket>();
  private readonly limits: AddressRateLimits;

  constructor(limits: AddressRateLimits) {
    this.limits = limits;
  }

  get enabled(): boolean {
    return this.limits.rate > 0;
  }

  /** A datagram request from `address`: true when it may pass (it then takes a token). */
  admit(address: string, now = performance.now()): boolean {
    const b = this.refill(address, now);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /**
   * A message read from a connection of `address`: it is taken, and the
   * connection should then pause this long (ms; 0: not at all). Taken messages
   * were served, so the debt is real: each connection of the address reads a
   * whole chunk (hundreds of messages) before it pauses, and only a debt that
   * grows with what they all took holds them together to the rate (a debt
   * capped at one burst let four connections take four times it). Capped at
   * MAX_DEBT_S of the rate, so no connection waits longer than that.
   */
  take(address: string, now = performance.now()): number {
    const b = this.refill(address, now);
    b.tokens = Math.max(-MAX_DEBT_S * this.limits.rate, b.tokens - 1);
    return this.waitMs(b);
  }

  /** How long a connection of `address` should wait now for the address's debt (ms; 0: none), taking nothing. */
  owedMs(address: string, now = performance.now()): number {
    if (!this.buckets.has(address)) return 0;
    return this.waitMs(this.refill(address, now));
  }

  /** How long until a bucket in debt is back to zero (ms; 0: not in debt). */
  private waitMs(b: Bucket): number {
    return b.tokens >= 0 ? 0 : Math.ceil((-b.tokens * 1000) / this.limits.rate);
  }

  get size(): number {
    return this.buckets.size;
  }

  private refill(address: string, now: number): Bucket {
    let b = this.buckets.get(address);
    if (b === undefined) {
      if (this.buckets.size >= this.limits.maxAddresses) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.limits.burst, last: now };
      this.buckets.set(address, b);
      return b;
    }
    b.tokens = Math.min(this.limits.burst, b.tokens + ((now - b.last) * this.limits.rate) / 1000);
    b.last = now;
    return b;
  }
}
