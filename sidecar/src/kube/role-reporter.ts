/**
 * The sidecar's main Kubernetes duty: say on its own pod what role it holds
 * (the ONE role label, which the VIP Service selects in LB modes) and at
 * which term. It never touches another pod (its Role allows patching only
 * the pair's two pods by name).
 *
 * `report` is fire and forget: the latest report is kept and retried with
 * jittered backoff until the API server takes it, each attempt cut off after
 * a timeout, a newer report replacing one not yet made. So one failed or
 * hung patch can never leave the label (and the Service) on the old master,
 * and the role machine never waits for the API server.
 */
import * as k8s from '@kubernetes/client-node';
import {
  HANDOVER_REFUSED_ANNOTATION,
  IN_SYNC_ANNOTATION,
  KEY_MISMATCH_ANNOTATION,
  KEYS_ANNOTATION,
  ROLE_LABEL,
  ROLE_REASON_ANNOTATION,
  ROLE_SINCE_ANNOTATION,
  type Role,
  TAKEOVER_GAP_ANNOTATION,
  TAKEOVER_REGISTRATIONS_ANNOTATION,
  TERM_ANNOTATION,
} from '../../../contract/names.ts';
import { LatestRetry } from './latest-retry.ts';

export interface RoleReport {
  role: Role;
  term: number;
  reason: string;
  gapMs?: number;
  /** Registrations held when this role began (a master: what it took over). */
  registrations?: number;
  /** When this role began (ISO time); default: when the report is made. */
  since?: string;
  /** The pair is in sync as this sidecar sees it (IN_SYNC_ANNOTATION). */
  inSync?: boolean;
  /** "<term> <reason>": a handover the operator asked for and this sidecar refused. */
  handoverRefused?: string;
  /** The ids of the pair keys held (KEYS_ANNOTATION). */
  keys?: string;
  /** The peer is heard with a key this sidecar does not hold (KEY_MISMATCH_ANNOTATION). */
  keyMismatch?: boolean;
}

export interface ReporterOptions {
  /** Default 5 s: a patch is small; longer means the API server is in trouble. */
  attemptTimeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** The label and annotations landed. */
  reported?: (r: RoleReport) => void;
  /** One attempt failed; it will be retried unless a newer report replaced it. */
  failed?: (r: RoleReport, err: unknown, attempt: number) => void;
  /**
   * How long the role label may differ from the last report, with none pending,
   * before the report is made again (default 3 s: longer than a report's own
   * delay and round trip, so a label on its way is never taken for an overwrite).
   */
  labelRecheckMs?: number;
  /** Another writer changed the role label (`label`): `r` is being reported again. */
  overwritten?: (label: string | undefined, r: RoleReport) => void;
}

/** One merge patch: label and annotations change together. */
export function rolePatch(
  r: RoleReport,
  now: Date,
): { metadata: { labels: Record<string, string>; annotations: Record<string, string> } } {
  const annotations: Record<string, string> = {
    [TERM_ANNOTATION]: String(r.term),
    [ROLE_REASON_ANNOTATION]: r.reason,
    [ROLE_SINCE_ANNOTATION]: r.since ?? now.toISOString(),
  };
  if (r.gapMs !== undefined) annotations[TAKEOVER_GAP_ANNOTATION] = String(Math.round(r.gapMs));
  if (r.registrations !== undefined) annotations[TAKEOVER_REGISTRATIONS_ANNOTATION] = String(r.registrations);
  if (r.inSync !== undefined) annotations[IN_SYNC_ANNOTATION] = String(r.inSync);
  if (r.handoverRefused !== undefined) annotations[HANDOVER_REFUSED_ANNOTATION] = r.handoverRefused;
  if (r.keys !== undefined) annotations[KEYS_ANNOTATION] = r.keys;
  if (r.keyMismatch !== undefined) annotations[KEY_MISMATCH_ANNOTATION] = String(r.keyMismatch);
  return { metadata: { labels: { [ROLE_LABEL]: r.role }, annotations } };
}

/** Request options that make a client-node call abortable (it has no signal parameter). */
export function withSignal(signal: AbortSignal, contentType?: string): k8s.ConfigurationOptions {
  // The object API runs observable-style middleware (as setHeaderOptions makes).
  const abortable: k8s.ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(signal);
      return new k8s.Observable(Promise.resolve(ctx));
    },
    post: (res) => new k8s.Observable(Promise.resolve(res)),
  };
  const base = contentType ? k8s.setHeaderOptions('Content-Type', contentType) : {};
  return { ...base, middleware: [...(base.middleware ?? []), abortable], middlewareMergeStrategy: 'append' };
}

export class RoleReporter {
  private readonly core: k8s.CoreV1Api;
  private readonly namespace: string;
  private readonly pod: string;
  private readonly retry: LatestRetry<RoleReport>;
  private readonly labelRecheckMs: number;
  private readonly overwritten: ReporterOptions['overwritten'];
  /** The newest report offered, delivered or not. */
  private latest: RoleReport | null = null;
  /** The role label as the pod's watch last saw it. */
  private label: string | undefined;
  private recheck: NodeJS.Timeout | null = null;

  constructor(kc: k8s.KubeConfig, namespace: string, pod: string, opts: ReporterOptions = {}) {
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.namespace = namespace;
    this.pod = pod;
    this.labelRecheckMs = opts.labelRecheckMs ?? 3000;
    this.overwritten = opts.overwritten;
    this.retry = new LatestRetry((r, signal) => this.patch(r, signal), {
      attemptTimeoutMs: opts.attemptTimeoutMs ?? 5000,
      minBackoffMs: opts.minBackoffMs ?? 250,
      maxBackoffMs: opts.maxBackoffMs ?? 5000,
      ...(opts.reported ? { delivered: opts.reported } : {}),
      ...(opts.failed ? { failed: opts.failed } : {}),
    });
  }

  /** Fire and forget; never throws. */
  report(r: RoleReport): void {
    this.latest = r;
    this.retry.offer(r);
  }

  /**
   * The role label the pod's watch sees now. The label has another writer (the
   * operator fences with role=fenced, from what it read a moment before): a
   * label that still differs from this sidecar's newest report after
   * `labelRecheckMs`, with no report pending, is put back. Left alone it would
   * stay, since a sidecar reports only when something changes.
   */
  observedLabel(role: string | undefined): void {
    this.label = role;
    if (!this.differs()) {
      if (this.recheck) clearTimeout(this.recheck);
      this.recheck = null;
      return;
    }
    if (!this.recheck) this.armRecheck();
  }

  /** True while a report waits to be made. */
  get pending(): boolean {
    return this.retry.busy;
  }

  stop(): void {
    if (this.recheck) clearTimeout(this.recheck);
    this.recheck = null;
    this.retry.stop();
  }

  private differs(): boolean {
    return this.latest !== null && this.label !== this.latest.role;
  }

  private checkLabel(): void {
    this.recheck = null;
    if (!this.differs() || this.latest === null) return;
    // A report on its way will settle it; look again after it.
    if (this.retry.busy) {
      this.armRecheck();
      return;
    }
    this.overwritten?.(this.label, this.latest);
    this.retry.offer(this.latest);
  }

  private armRecheck(): void {
    this.recheck = setTimeout(() => this.checkLabel(), this.labelRecheckMs);
    this.recheck.unref();
  }

  private async patch(r: RoleReport, signal: AbortSignal): Promise<void> {
    await this.core.patchNamespacedPod(
      { namespace: this.namespace, name: this.pod, body: rolePatch(r, new Date()) },
      withSignal(signal, k8s.PatchStrategy.MergePatch),
    );
  }
}
