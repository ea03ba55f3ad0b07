/**
 * A watch that heals itself (the operator's watch layer owns restarts:
 * client-node's ListWatch does not restart on every error, see
 * kubernetes-client/javascript#795): list, then watch from the list's
 * resourceVersion; on 410 Gone relist; on any end or error reconnect with
 * jittered backoff; a watchdog restarts a watch that has been silent too long.
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
  /** Restart a watch that delivered nothing for this long (server bookmarks keep a healthy one alive). */
  silenceMs?: number;
}

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
    const body = await this.objects.list(
      this.spec.apiVersion,
      this.spec.kind,
      this.spec.namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      this.spec.labelSelector,
    );
    this.resourceVersion = body.metadata?.resourceVersion ?? '';
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
        this.log.info({ err: (err as Error).message }, 'watch failed; retrying');
        relist = (err as { code?: number }).code === 410 || relist;
        const wait = this.backoffMs * (0.5 + Math.random());
        this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
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
          if (err && !gone && !this.stopped && (err as Error).name !== 'AbortError') reject(err);
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
