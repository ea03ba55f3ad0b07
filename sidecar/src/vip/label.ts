/**
 * `metallb` / `kube-vip` modes: the VIP belongs to a LoadBalancer Service
 * that selects the pod labelled sipha.io/role=master, so taking the VIP over
 * is the role label the sidecar writes on its own pod (RoleReporter) — one
 * write, as Patroni/CloudNativePG do. Nothing to do on the host here: the
 * announcer only records that the label path is the one in use.
 */
import type { Logger } from '../log.ts';
import type { VipAnnouncer } from './announcer.ts';

export class LabelAnnouncer implements VipAnnouncer {
  onLost: (reason: string) => void = () => {};
  private readonly mode: string;
  private readonly log: Logger;

  constructor(mode: string, log: Logger) {
    this.mode = mode;
    this.log = log;
  }

  /** Nothing on the host to clean: the label is rewritten with the role. */
  async reset(): Promise<void> {}

  close(): void {}

  async acquire(): Promise<void> {
    this.log.info({ mode: this.mode }, 'VIP follows the master label (LoadBalancer Service)');
  }

  async release(): Promise<void> {
    this.log.info({ mode: this.mode }, 'master label released');
  }
}
