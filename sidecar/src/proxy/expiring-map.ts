/**
 * A map whose entries live between one and two rotation periods, kept as
 * two generations: no per-entry timers, no scans, O(1) everything. Used
 * for transaction-scoped state (branch -> flow, branch -> next hop).
 */
export class ExpiringMap<K, V> {
  private current = new Map<K, V>();
  private previous = new Map<K, V>();
  private readonly timer: NodeJS.Timeout;

  constructor(periodMs: number) {
    this.timer = setInterval(() => this.rotate(), periodMs);
    this.timer.unref();
  }

  set(key: K, value: V): void {
    this.current.set(key, value);
  }

  get(key: K): V | undefined {
    return this.current.get(key) ?? this.previous.get(key);
  }

  delete(key: K): void {
    this.current.delete(key);
    this.previous.delete(key);
  }

  get size(): number {
    return this.current.size + this.previous.size;
  }

  rotate(): void {
    this.previous = this.current;
    this.current = new Map();
  }

  close(): void {
    clearInterval(this.timer);
  }
}
