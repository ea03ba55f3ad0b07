/**
 * How a master makes the VIP answer to it (one implementation per mode,
 * kube-vip style). Every call returns or throws promptly; a failure to
 * acquire is a reason the node must not claim to serve.
 */
export interface VipAnnouncer {
  acquire(): Promise<void>;
  release(): Promise<void>;
}
