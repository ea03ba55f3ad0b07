/**
 * The sidecar's Prometheus metrics. Hot-path counters are bound to their
 * label values once (prom-client children), so counting costs no label hashing.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { REJECT_REASONS } from './sip/reasons.ts';

export type Direction = 'inbound' | 'from_server' | 'egress';

export function createMetrics() {
  const registry = new Registry();
  const messages = new Counter({
    name: 'sipha_messages_total',
    help: 'SIP messages handled, by path',
    labelNames: ['path'] as const,
    registers: [registry],
  });
  const dropped = new Counter({
    name: 'sipha_messages_dropped_total',
    help: 'SIP messages dropped, by path and reason',
    labelNames: ['path', 'reason'] as const,
    registers: [registry],
  });
  const linkUp = new Gauge({
    name: 'sipha_server_link_connections',
    help: 'Open connections to the local SIP server',
    registers: [registry],
  });
  const flows = new Gauge({
    name: 'sipha_tcp_flows',
    help: 'Open TCP connections with SIP peers',
    registers: [registry],
  });
  // Pre-create every reason so a scrape shows zeroes, not absent series.
  for (const path of ['inbound', 'from_server', 'egress'] as const) {
    for (const reason of REJECT_REASONS) dropped.labels(path, reason).inc(0);
  }
  return {
    registry,
    inbound: messages.labels('inbound'),
    toServer: messages.labels('to_server'),
    fromServer: messages.labels('from_server'),
    toClient: messages.labels('to_client'),
    dropped,
    linkUp,
    flows,
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
