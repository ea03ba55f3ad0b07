/**
 * Leader election on a coordination.k8s.io/v1 Lease, so two operator
 * replicas can run and only one writes. Acquire when the lease is free or
 * expired, renew well within its duration, step down the moment a renewal
 * cannot be made in time. Optimistic concurrency (resourceVersion) decides
 * races between candidates.
 */
import { type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { isConflict, isNotFound, type Kube } from './kube.ts';

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationS: number;
  /** How often the leader renews and candidates retry. */
  retryMs: number;
}

export class LeaderElector {
  private leading = false;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly kube: Kube;
  private readonly opts: LeaderOptions;
  private readonly log: Logger;
  private readonly onStart: () => void;
  private readonly onStop: () => void;

  constructor(kube: Kube, opts: LeaderOptions, log: Logger, onStart: () => void, onStop: () => void) {
    this.kube = kube;
    this.opts = opts;
    this.log = log;
    this.onStart = onStart;
    this.onStop = onStop;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    void this.tick();
  }

  /** Steps down and releases the lease so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.leading) {
      this.setLeading(false);
      try {
        const lease = await this.read();
        if (lease?.spec?.holderIdentity === this.opts.identity && lease.spec) {
          lease.spec = { leaseDurationSeconds: lease.spec.leaseDurationSeconds, leaseTransitions: lease.spec.leaseTransitions };
          await this.kube.coordination.replaceNamespacedLease({
            namespace: this.opts.namespace,
            name: this.opts.name,
            body: lease,
          });
        }
      } catch {
        // the lease will expire on its own
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      const ok = await this.tryAcquireOrRenew();
      if (ok) this.lastRenew = Date.now();
      if (ok && !this.leading) this.setLeading(true);
      if (!ok && this.leading) this.setLeading(false);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'lease update failed');
      // Cannot prove we still hold it: step down before the others may take it.
      if (this.leading && Date.now() - this.lastRenew > this.opts.leaseDurationS * 1000 * 0.8) this.setLeading(false);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.opts.retryMs);
  }

  private setLeading(v: boolean): void {
    this.leading = v;
    this.log.info({ identity: this.opts.identity, lease: this.opts.name }, v ? 'became leader' : 'stopped leading');
    if (v) this.onStart();
    else this.onStop();
  }

  private async read(): Promise<V1Lease | null> {
    try {
      return await this.kube.coordination.readNamespacedLease({ namespace: this.opts.namespace, name: this.opts.name });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    // Lease times are MicroTime: V1MicroTime serialises with 6 fractional digits.
    const now = new V1MicroTime();
    const lease = await this.read();
    const me = this.opts.identity;
    if (lease === null) {
      try {
        await this.kube.coordination.createNamespacedLease({
          namespace: this.opts.namespace,
          body: {
            metadata: { name: this.opts.name, namespace: this.opts.namespace },
            spec: {
              holderIdentity: me,
              leaseDurationSeconds: this.opts.leaseDurationS,
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          },
        });
        return true;
      } catch (err) {
        if (isConflict(err)) return false;
        throw err;
      }
    }
    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity;
    const renewed = spec.renewTime ? new Date(spec.renewTime as unknown as string).getTime() : 0;
    const expired = !holder || renewed + (spec.leaseDurationSeconds ?? this.opts.leaseDurationS) * 1000 < now.getTime();
    if (holder !== me && !expired) return false;
    const taking = holder !== me;
    lease.spec = {
      holderIdentity: me,
      leaseDurationSeconds: this.opts.leaseDurationS,
      renewTime: now,
      acquireTime: taking || !spec.acquireTime ? now : new V1MicroTime(spec.acquireTime),
      leaseTransitions: (spec.leaseTransitions ?? 0) + (taking ? 1 : 0),
    };
    try {
      await this.kube.coordination.replaceNamespacedLease({ namespace: this.opts.namespace, name: this.opts.name, body: lease });
      return true;
    } catch (err) {
      if (isConflict(err)) return false; // someone else won the race
      throw err;
    }
  }
}
