/**
 * The sidecar's only Kubernetes duty: say on its own pod what role it holds
 * (the ONE role label, which the VIP Service selects) and at which term, and
 * notice when the operator fenced it. It never touches another pod (its Role
 * allows patching only the pair's two pods by name).
 */
import * as k8s from '@kubernetes/client-node';
import {
  FENCED_ANNOTATION,
  ROLE_LABEL,
  ROLE_REASON_ANNOTATION,
  ROLE_SINCE_ANNOTATION,
  type Role,
  TAKEOVER_GAP_ANNOTATION,
  TERM_ANNOTATION,
} from '../../../contract/names.ts';

export interface RoleReport {
  role: Role;
  term: number;
  reason: string;
  gapMs?: number;
}

export class RoleReporter {
  private readonly core: k8s.CoreV1Api;
  private readonly kc: k8s.KubeConfig;
  private readonly namespace: string;
  private readonly pod: string;
  private abort: AbortController | null = null;

  constructor(kc: k8s.KubeConfig, namespace: string, pod: string) {
    this.kc = kc;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.namespace = namespace;
    this.pod = pod;
  }

  /** One merge patch: label and annotations change together. */
  async report(r: RoleReport): Promise<void> {
    const annotations: Record<string, string> = {
      [TERM_ANNOTATION]: String(r.term),
      [ROLE_REASON_ANNOTATION]: r.reason,
      [ROLE_SINCE_ANNOTATION]: new Date().toISOString(),
    };
    if (r.gapMs !== undefined) annotations[TAKEOVER_GAP_ANNOTATION] = String(Math.round(r.gapMs));
    await this.core.patchNamespacedPod(
      { namespace: this.namespace, name: this.pod, body: { metadata: { labels: { [ROLE_LABEL]: r.role }, annotations } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  }

  /** Calls `onFenced(term)` when the operator fences this pod. */
  async watchFencing(onFenced: (term: number) => void): Promise<void> {
    const w = new k8s.Watch(this.kc);
    let seen = -1;
    this.abort = await w.watch(
      `/api/v1/namespaces/${this.namespace}/pods`,
      { fieldSelector: `metadata.name=${this.pod}` },
      (_type, obj: k8s.V1Pod) => {
        const t = obj.metadata?.annotations?.[FENCED_ANNOTATION];
        if (t !== undefined && Number(t) !== seen) {
          seen = Number(t);
          onFenced(seen);
        }
      },
      () => {
        if (this.abort) setTimeout(() => void this.watchFencing(onFenced), 1000).unref();
      },
    );
  }

  stop(): void {
    const a = this.abort;
    this.abort = null;
    a?.abort();
  }
}
