/**
 * The sidecar's Prometheus metrics. The hot path only bumps plain numbers
 * (`hot`); prom-client reads them at scrape time through `collect()`, so
 * counting a message costs an add, not a label hash.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { REJECT_REASONS } from './sip/reasons.ts';

export type DropPath = 'inbound' | 'from_server' | 'egress';

export interface HotCounters {
  inbound: number;
  toServer: number;
  fromServer: number;
  toClient: number;
}

export function createMetrics() {
  const registry = new Registry();
  const hot: HotCounters = { inbound: 0, toServer: 0, fromServer: 0, toClient: 0 };
  const drops = new Map<string, number>(); // "path|reason" -> count
  for (const path of ['inbound', 'from_server', 'egress'] as const) {
    for (const reason of REJECT_REASONS) drops.set(`${path}|${reason}`, 0);
  }
  new Counter({
    name: 'sipha_messages_total',
    help: 'SIP messages handled, by path',
    labelNames: ['path'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ path: 'inbound' }, hot.inbound);
      this.inc({ path: 'to_server' }, hot.toServer);
      this.inc({ path: 'from_server' }, hot.fromServer);
      this.inc({ path: 'to_client' }, hot.toClient);
    },
  });
  new Counter({
    name: 'sipha_messages_dropped_total',
    help: 'SIP messages dropped, by path and reason',
    labelNames: ['path', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of drops) {
        const [path, reason] = key.split('|') as [string, string];
        this.inc({ path, reason }, n);
      }
    },
  });
  const linkUp = new Gauge({
    name: 'sipha_server_link_connections',
    help: 'Open connections to the local SIP server',
    registers: [registry],
  });
  const flows = new Gauge({ name: 'sipha_tcp_flows', help: 'Open TCP connections with SIP peers', registers: [registry] });
  return {
    registry,
    hot,
    linkUp,
    flows,
    /** Counts one dropped message; the reason is a bounded label value. */
    drop(path: DropPath, reason: string): void {
      const key = `${path}|${reason}`;
      drops.set(key, (drops.get(key) ?? 0) + 1);
    },
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
