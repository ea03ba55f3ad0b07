/**
 * Notices when the operator fences this pod (the fenced-term annotation on
 * it) or asks it to hand over, and passes on the role label it sees (the
 * reporter puts its own back when another writer overwrote it). Built on the
 * shared healing watch (contract/kube-watch.ts): started
 * while the API server is unreachable, it keeps retrying; it relists on 410,
 * reconnects with backoff and restarts a silent stream. Each fence term is
 * delivered once; when the operator lifts the fence a later one is delivered
 * again. Whether a fence applies is the role machine's call (it ignores a
 * fence older than its own term).
 */
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ResilientWatch } from '../../../contract/kube-watch.ts';
import { FENCED_ANNOTATION, HANDOVER_ANNOTATION, ROLE_LABEL } from '../../../contract/names.ts';

/** A term written in one of a pod's annotations, if any and well-formed. */
function termIn(pod: k8s.KubernetesObject, annotation: string): number | undefined {
  const raw = pod.metadata?.annotations?.[annotation];
  if (raw === undefined) return undefined;
  const t = Number(raw);
  return Number.isInteger(t) && t >= 0 ? t : undefined;
}

/** The fence term written on a pod, if any and well-formed. */
export function fenceTerm(pod: k8s.KubernetesObject): number | undefined {
  return termIn(pod, FENCED_ANNOTATION);
}

/** What the pod's watch tells: each callback is optional but the fence's. */
export interface PodHandlers {
  /** The operator fenced this pod at `term`. */
  fenced: (term: number) => void;
  /** The operator asks this pod to hand over (a planned switchover), if it is master at `term`. */
  handover?: (term: number) => void;
  /** The pod's role label as it is now, on every event (who wrote it is not known). */
  roleLabel?: (role: string | undefined) => void;
}

export class FencingWatch {
  private readonly watch: ResilientWatch;
  private seen: number | undefined;
  private seenHandover: number | undefined;

  constructor(kc: k8s.KubeConfig, namespace: string, pod: string, handlers: PodHandlers, log: Logger) {
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
        if (type !== 'DELETED') handlers.roleLabel?.(obj.metadata?.labels?.[ROLE_LABEL]);
        const h = type === 'DELETED' ? undefined : termIn(obj, HANDOVER_ANNOTATION);
        if (h !== this.seenHandover) {
          this.seenHandover = h;
          if (h !== undefined) handlers.handover?.(h);
        }
        const t = type === 'DELETED' ? undefined : fenceTerm(obj);
        if (t === this.seen) return;
        this.seen = t;
        if (t !== undefined) handlers.fenced(t);
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
