/** The SipHaPair resource as both programs see it (mirrors crds/siphapair.yaml). */
import type { ConditionType, Phase } from './names.ts';

export type VipMode = 'arp' | 'metallb' | 'kube-vip';
export type ReplicationMode = 'sync' | 'async';
export type WitnessMode = 'lease' | 'udp' | 'none';

/** A container's requests and limits (a Pod's ResourceRequirements, quantities as Kubernetes writes them). */
export interface ContainerResources {
  requests?: Record<string, string | number>;
  limits?: Record<string, string | number>;
}

export interface SipHaPairSpec {
  sipServer: {
    image: string;
    command?: string[];
    args?: string[];
    /** ConfigMap holding the SIP server configuration, mounted at configMountPath. */
    configMap?: string;
    configMountPath?: string;
    env?: Array<{ name: string; value: string }>;
    /** Absent: the operator's defaults (Guaranteed; operator/src/resources.ts). */
    resources?: ContainerResources;
  };
  sidecar: { image: string; resources?: ContainerResources };
  ports: { sip: number; serverLink: number; egress: number; heartbeat: number; replication: number; metrics: number };
  vip: { address: string; mode: VipMode; interface?: string };
  heartbeat: { intervalMs: number; misses: number };
  replication: { mode: ReplicationMode };
  /** Who decides when the sidecars cannot hear each other (decision 0005); defaulted to lease by the CRD. */
  witness?: { mode: WitnessMode; address?: string };
  /** Ordinal (0 or 1) preferred as master when both start. */
  preferredMaster?: number;
}

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

export interface SipHaPairStatus {
  phase?: Phase;
  master?: string;
  backup?: string;
  term?: number;
  failoverCount?: number;
  lastFailover?: { time: string; reason: string; gapMs?: number; from?: string; to: string };
  conditions?: Condition[];
  observedGeneration?: number;
}

export interface SipHaPair {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    generation?: number;
    resourceVersion?: string;
    creationTimestamp?: string;
    annotations?: Record<string, string>;
  };
  spec: SipHaPairSpec;
  status?: SipHaPairStatus;
}
