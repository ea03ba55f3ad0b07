/**
 * Replication lag p99 as each sidecar measures it (send to ack over the last
 * 8192 messages: a master's figure), read through the API server's pod
 * proxy, the way `kubectl get --raw` reaches a pod. Needs pods/proxy and a
 * running pod; anything else is "unknown", never 0.
 */
import type { V1Pod } from '@kubernetes/client-node';
import type { Client } from './client.ts';
import { rawGet } from './raw-get.ts';
import type { LagByPod } from './render.ts';

/** The quantile gauge under its Prometheus-conventional name (seconds), and under its earlier one (ms). */
const P99_SECONDS = /^sipha_replication_lag_window_seconds\{quantile="0\.99"\} (\S+)$/m;
const P99_MS = /^sipha_replication_lag_ms\{quantile="0\.99"\} (\S+)$/m;

/** The p99 in ms from a Prometheus text page; undefined when absent or not a number (a backup has none). */
export function lagP99(metricsText: string): number | undefined {
  const s = P99_SECONDS.exec(metricsText);
  const ms = s ? Number(s[1]) * 1000 : Number(P99_MS.exec(metricsText)?.[1] ?? Number.NaN);
  return Number.isFinite(ms) ? Math.round(ms * 100) / 100 : undefined;
}

export async function readLag(client: Client, pods: V1Pod[], metricsPort: number, timeoutMs: number): Promise<LagByPod> {
  const out: LagByPod = new Map();
  await Promise.all(
    pods.map(async (p) => {
      const name = p.metadata?.name;
      if (!name || p.status?.phase !== 'Running') return;
      try {
        const r = await rawGet(
          client.kc,
          `/api/v1/namespaces/${client.namespace}/pods/${name}:${metricsPort}/proxy/metrics`,
          timeoutMs,
        );
        const v = r.status === 200 ? lagP99(r.body) : undefined;
        if (v !== undefined) out.set(name, v);
      } catch {
        // No proxy right, pod not answering: the column says "-".
      }
    }),
  );
  return out;
}
