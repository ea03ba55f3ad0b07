/** `kubectl sipha logs NAME`: both sidecars' logs, read through the API server, merged by time. */
import { PAIR_LABEL, SIDECAR_CONTAINER } from '../../contract/names.ts';
import { apiMessage, type Client } from './client.ts';
import { mergeLogs, type PodLog } from './merge-logs.ts';
import { rawGet, statusMessage } from './raw-get.ts';

export interface LogOptions {
  container: string | undefined;
  tailLines: number | undefined;
  sinceSeconds: number | undefined;
}

export async function pairLogs(
  client: Client,
  pair: string,
  opts: LogOptions,
): Promise<{ lines: string[]; errors: string[]; notes: string[] }> {
  const pods = (await client.core.listNamespacedPod({ namespace: client.namespace, labelSelector: `${PAIR_LABEL}=${pair}` }))
    .items;
  if (pods.length === 0) return { lines: [], errors: [`no pods of pair ${pair} in namespace ${client.namespace}`], notes: [] };
  const container = opts.container ?? SIDECAR_CONTAINER;
  const errors: string[] = [];
  const notes: string[] = [];
  const logs = await Promise.all(
    pods.map(async (p): Promise<PodLog | null> => {
      const name = p.metadata?.name ?? '';
      const query = new URLSearchParams({ container });
      if (opts.tailLines !== undefined) query.set('tailLines', String(opts.tailLines));
      if (opts.sinceSeconds !== undefined) query.set('sinceSeconds', String(opts.sinceSeconds));
      try {
        const r = await rawGet(client.kc, `/api/v1/namespaces/${client.namespace}/pods/${name}/log?${query}`, 30_000);
        // 204: the API server has no node to ask (the pod is not scheduled yet).
        if (r.status === 204) {
          notes.push(`${name}: no log: the pod is not on a node yet`);
          return null;
        }
        if (r.status !== 200) {
          errors.push(`${name}: ${statusMessage(r)}`);
          return null;
        }
        return { pod: name, container, text: r.body };
      } catch (err) {
        // One pod's log missing (not started, node gone) must not hide the other's.
        errors.push(`${name}: ${apiMessage(err)}`);
        return null;
      }
    }),
  );
  return { lines: mergeLogs(logs.filter((l): l is PodLog => l !== null)), errors, notes };
}
