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

/** A reading from /proc of a process that may be gone (a crashed host): null then, never a made-up value. */
export function readOrNull<T>(read: () => T): T | null {
  try {
    return read();
  } catch {
    return null;
  }
}

/** The UDP counters of the network namespace process `pid` lives in (/proc/PID/net is that namespace's view): no fork. */
export function udpSnmpOf(pid: number): Record<string, number> {
  return parseUdpSnmp(readFileSync(`/proc/${pid}/net/snmp`, 'utf8'));
}

/** "0100007F:13C4" (a little-endian IPv4 word, the port in hex) -> "127.0.0.1:5060". */
function hexAddress(hex: string): string {
  const [ip = '', port = ''] = hex.split(':');
  const bytes = (ip.match(/../g) ?? []).map((b) => Number.parseInt(b, 16)).reverse();
  return `${bytes.join('.')}:${Number.parseInt(port, 16)}`;
}

/**
 * Each IPv4 UDP socket's own drop count from /proc/net/udp's text, by local
 * address ("198.18.0.100:5060"): which socket's receive buffer overflowed,
 * where RcvbufErrors says only that one in the namespace did.
 */
export function parseUdpSockets(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 13) continue;
    const address = hexAddress(cols[1] as string);
    out.set(address, (out.get(address) ?? 0) + Number(cols.at(-1)));
  }
  return out;
}

/** The UDP sockets' drops in the namespace process `pid` lives in: no fork. */
export function udpSocketDrops(pid: number): Map<string, number> {
  return parseUdpSockets(readFileSync(`/proc/${pid}/net/udp`, 'utf8'));
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
