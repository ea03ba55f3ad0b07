/**
 * Notices when the operator fences this pod (the fenced-term annotation on
 * it). Built on the shared healing watch (contract/kube-watch.ts): started
 * while the API server is unreachable, it keeps retrying; it relists on 410,
 * reconnects with backoff and restarts a silent stream. Each fence term is
 * delivered once; when the operator lifts the fence a later one is delivered
 * again. Whether a fence applies is the role machine's call (it ignores a
 * fence older than its own term).
 */
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ResilientWatch } from '../../../contract/kube-watch.ts';
import { FENCED_ANNOTATION } from '../../../contract/names.ts';

/** The fence term written on a pod, if any and well-formed. */
export function fenceTerm(pod: k8s.KubernetesObject): number | undefined {
  const raw = pod.metadata?.annotations?.[FENCED_ANNOTATION];
  if (raw === undefined) return undefined;
  const t = Number(raw);
  return Number.isInteger(t) && t >= 0 ? t : undefined;
}

export class FencingWatch {
  private readonly watch: ResilientWatch;
  private seen: number | undefined;

  constructor(kc: k8s.KubeConfig, namespace: string, pod: string, onFenced: (term: number) => void, log: Logger) {
    this.watch = new ResilientWatch(
      kc,
      {
        apiVersion: 'v1',
        kind: 'Pod',
        namespace,
        path: `/api/v1/namespaces/${namespace}/pods`,
        fieldSelector: `metadata.name=${pod}`,
      },
      (type, obj) => {
        const t = type === 'DELETED' ? undefined : fenceTerm(obj);
        if (t === this.seen) return;
        this.seen = t;
        if (t !== undefined) onFenced(t);
      },
      log,
    );
  }

  start(): void {
    this.watch.start();
  }

  stop(): void {
    this.watch.stop();
  }
}
