/**
 * Per-address admission for a public listener (issue 9): how many connections
 * one remote address holds, and how fast it opens new ones (a token bucket,
 * as Kamailio's pike does for requests). Judged at accept, before any framer,
 * timer or TLS handshake is spent on the connection.
 *
 * Bounded: at most `maxAddresses` addresses are remembered, the least recently
 * seen forgotten first (a Map in insertion order, touched by re-inserting: O(1)).
 * An address forgotten while it still has connections starts afresh; to push it
 * out an attacker needs `maxAddresses` other addresses, and then the listener's
 * global cap (SIPHA_TCP_MAX_FLOWS) is what holds.
 */
export interface AddressLimits {
  /** Connections one address may hold open; 0: no cap. */
  maxFlowsPerAddress: number;
  /** New connections a second one address may open after a burst (the per-address cap, or one second's worth); 0: no limit. */
  acceptRatePerAddress: number;
  /** Addresses remembered. */
  maxAddresses: number;
}

export type AddressRefusal = 'tcp-address-full' | 'tcp-address-rate';

/** One address's standing; a connection keeps its own to give its slot back. */
export interface AddressEntry {
  flows: number;
  tokens: number;
  last: number;
}

export class AddressTable {
  private readonly entries = new Map<string, AddressEntry>();
  private readonly limits: AddressLimits;
  private readonly burst: number;

  constructor(limits: AddressLimits) {
    this.limits = limits;
    // An office NAT's phones all reconnect at once after a failover: its whole allowance is one burst.
    this.burst = limits.maxFlowsPerAddress > 0 ? limits.maxFlowsPerAddress : limits.acceptRatePerAddress;
  }

  /** A new connection from `address`: its entry (the slot taken), or why it is refused. */
  admit(address: string, now = performance.now()): AddressEntry | AddressRefusal {
    let e = this.entries.get(address);
    if (e === undefined) {
      e = { flows: 0, tokens: this.burst, last: now };
      if (this.entries.size >= this.limits.maxAddresses) {
        const oldest = this.entries.keys().next().value as string;
        this.entries.delete(oldest);
      }
    } else this.entries.delete(address); // re-inserted below: now the most recently seen
    this.entries.set(address, e);
    const { maxFlowsPerAddress: cap, acceptRatePerAddress: rate } = this.limits;
    if (cap > 0 && e.flows >= cap) return 'tcp-address-full';
    if (rate > 0) {
      e.tokens = Math.min(this.burst, e.tokens + ((now - e.last) * rate) / 1000);
      e.last = now;
      if (e.tokens < 1) return 'tcp-address-rate';
      e.tokens -= 1;
    }
    e.flows++;
    return e;
  }

  /** A connection admitted with `entry` closed. */
  release(entry: AddressEntry): void {
    entry.flows--;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Least recently seen first (for tests). */
  addresses(): string[] {
    return [...this.entries.keys()];
  }
}
