/**
 * Where and when the kernel dropped UDP datagrams because a socket's receive
 * buffer was full (/proc/net/snmp "Udp: RcvbufErrors"). A message lost that way
 * never reaches the sidecar's own drop counters: a stalled process shows only
 * here. The soak reads it every second per bed host, so a loss can be put beside
 * a failover's packet stories.
 */
import { readFileSync } from 'node:fs';

/** The "Udp:" counters of /proc/net/snmp's text. */
export function parseUdpSnmp(text: string): Record<string, number> {
  const lines = text.split('\n').filter((l) => l.startsWith('Udp:'));
  const [head, values] = [lines[0]?.split(/\s+/) ?? [], lines[1]?.split(/\s+/) ?? []];
  if (head.length < 2 || head.length !== values.length) throw new Error('no Udp: lines in /proc/net/snmp');
  return Object.fromEntries(head.slice(1).map((k, i) => [k, Number(values[i + 1])]));
}

/** The UDP counters of the network namespace process `pid` lives in (/proc/PID/net is that namespace's view): no fork. */
export function udpSnmpOf(pid: number): Record<string, number> {
  return parseUdpSnmp(readFileSync(`/proc/${pid}/net/snmp`, 'utf8'));
}

export interface Growth {
  /** Seconds, on the caller's clock. */
  readonly t: number;
  readonly source: string;
  readonly n: number;
}

/**
 * The growth of one counter per source between readings. A reading below the
 * last one is a new namespace or process (a crashed host made again): it counts
 * from 0. A missing reading (null: the source is gone) leaves the last one as it was.
 */
export class CounterGrowth {
  readonly grows: Growth[] = [];
  private readonly last = new Map<string, number>();

  add(t: number, source: string, value: number | null): void {
    if (value === null) return;
    const prev = this.last.get(source);
    this.last.set(source, value);
    if (prev === undefined) return;
    const n = value >= prev ? value - prev : value;
    if (n > 0) this.grows.push({ t, source, n });
  }

  /** Sum per source of the growth at times in [from, to). */
  between(from: number, to: number): Map<string, number> {
    const out = new Map<string, number>();
    for (const g of this.grows) if (g.t >= from && g.t < to) out.set(g.source, (out.get(g.source) ?? 0) + g.n);
    return out;
  }

  total(source: string): number {
    return this.grows.filter((g) => g.source === source).reduce((s, g) => s + g.n, 0);
  }
}

/** "a +12, uas +3", or '' when nothing grew. */
export function growthText(sums: Map<string, number>): string {
  return [...sums].map(([s, n]) => `${s} +${n}`).join(', ');
}
