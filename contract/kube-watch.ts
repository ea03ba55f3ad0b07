/**
 * A watch that heals itself, shared by the operator (its controller's
 * watches) and the sidecar (its fencing watch): one implementation. The
 * watch layer owns restarts because client-node's ListWatch does not restart
 * on every error (kubernetes-client/javascript#795): list, then watch from
 * the list's resourceVersion; on 410 Gone relist; on any end or error
 * reconnect with jittered backoff; a watchdog restarts a watch that has been
 * silent too long. A watch started while the API server is unreachable
 * simply keeps retrying until it can list.
 *
 * Loads @kubernetes/client-node: the sidecar imports this module only in a pod.
 */
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

export type WatchEvent = 'ADDED' | 'MODIFIED' | 'DELETED';
export type Handler = (type: WatchEvent, obj: k8s.KubernetesObject) => void;

export interface WatchSpec {
  apiVersion: string;
  kind: string;
  /** Undefined: all namespaces. */
  namespace?: string;
  /** Collection path, e.g. /api/v1/namespaces/ns/pods or /apis/sipha.io/v1alpha1/siphapairs */
  path: string;
  labelSelector?: string;
  /** e.g. metadata.name=<pod>: one object, with list/watch rights only. */
  fieldSelector?: string;
  /** Restart a watch that delivered nothing for this long (server bookmarks keep a healthy one alive). */
  silenceMs?: number;
  /** Ceiling of the reconnect backoff (it starts at 200 ms and doubles). */
  maxBackoffMs?: number;
}

/** A list that hangs (a stalled API server) must not hold the watch forever. */
const LIST_TIMEOUT_MS = 30_000;

export class ResilientWatch {
  private stopped = false;
  private abort: AbortController | null = null;
  private resourceVersion = '';
  private lastEvent = Date.now();
  private backoffMs = 200;
  private watchdog: NodeJS.Timeout | null = null;
  private readonly kc: k8s.KubeConfig;
  private readonly objects: k8s.KubernetesObjectApi;
  private readonly spec: WatchSpec;
  private readonly handler: Handler;
  private readonly log: Logger;

  constructor(kc: k8s.KubeConfig, spec: WatchSpec, handler: Handler, log: Logger) {
    this.kc = kc;
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.spec = spec;
    this.handler = handler;
    this.log = log.child({ watch: spec.path });
  }

  start(): void {
    void this.run(true);
    const silence = this.spec.silenceMs ?? 90_000;
    this.watchdog = setInterval(
      () => {
        if (Date.now() - this.lastEvent > silence) {
          this.log.warn({ silentMs: Date.now() - this.lastEvent }, 'watch silent too long; restarting');
          this.lastEvent = Date.now();
          this.abort?.abort();
        }
      },
      Math.min(silence, 10_000),
    );
    this.watchdog.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.abort?.abort();
  }

  private async list(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`list timed out after ${LIST_TIMEOUT_MS} ms`)), LIST_TIMEOUT_MS);
    });
    const body = await Promise.race([
      this.objects.list(
        this.spec.apiVersion,
        this.spec.kind,
        this.spec.namespace,
        undefined,
        undefined,
        undefined,
        this.spec.fieldSelector,
        this.spec.labelSelector,
      ),
      timeout,
    ]).finally(() => clearTimeout(timer));
    this.resourceVersion = body.metadata?.resourceVersion ?? '';
    this.lastEvent = Date.now();
    for (const item of body.items) {
      item.apiVersion ??= this.spec.apiVersion;
      item.kind ??= this.spec.kind;
      this.handler('ADDED', item);
    }
  }

  private async run(relist: boolean): Promise<void> {
    while (!this.stopped) {
      try {
        if (relist || this.resourceVersion === '') await this.list();
        relist = false;
        const ended = await this.watchOnce();
        if (ended === 'gone') relist = true;
        this.backoffMs = 200;
      } catch (err) {
        if (this.stopped) return;
        this.log.info({ err }, 'watch failed; retrying');
        const code = (err as { code?: number; statusCode?: number }).code ?? (err as { statusCode?: number }).statusCode;
        relist = code === 410 || relist;
        const wait = this.backoffMs * (0.5 + Math.random());
        this.backoffMs = Math.min(this.backoffMs * 2, this.spec.maxBackoffMs ?? 10_000);
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** Resolves when the watch ends: 'gone' when the resourceVersion is too old. */
  private watchOnce(): Promise<'ended' | 'gone'> {
    return new Promise((resolve, reject) => {
      let gone = false;
      const w = new k8s.Watch(this.kc);
      w.watch(
        this.spec.path,
        {
          resourceVersion: this.resourceVersion,
          allowWatchBookmarks: true,
          labelSelector: this.spec.labelSelector,
          fieldSelector: this.spec.fieldSelector,
        },
        (type, obj) => {
          this.lastEvent = Date.now();
          if (type === 'BOOKMARK') {
            this.resourceVersion = obj?.metadata?.resourceVersion ?? this.resourceVersion;
            return;
          }
          if (type === 'ERROR') {
            if (obj?.code === 410) gone = true;
            this.abort?.abort();
            return;
          }
          const rv = obj?.metadata?.resourceVersion;
          this.handler(type as WatchEvent, obj);
          if (rv) this.resourceVersion = rv; // moves only after the handler ran
        },
        (err) => {
          // client-node ends a quiet stream after 30 s (TimeoutError): a normal end, reconnect at once.
          const name = (err as Error | null)?.name;
          if (err && !gone && !this.stopped && name !== 'AbortError' && name !== 'TimeoutError') reject(err);
          else resolve(gone ? 'gone' : 'ended');
        },
      )
        .then((ac) => {
          this.abort = ac;
        })
        .catch(reject);
    });
  }
}
