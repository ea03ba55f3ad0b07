/**
 * How a master makes the VIP answer to it (one implementation per mode,
 * kube-vip style). Every call returns or throws promptly; a failure to
 * acquire is a reason the node must not claim to serve.
 */
export interface VipAnnouncer {
  /** At start: remove whatever an earlier incarnation of this sidecar left behind. */
  reset(): Promise<void>;
  acquire(): Promise<void>;
  release(): Promise<void>;
  /** Stops timers and helpers (at exit). */
  close(): void;
  /** Called when a held VIP is found lost (the node must stop claiming it); set by the HA node. */
  onLost: (reason: string) => void;
}
