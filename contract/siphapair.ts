/** The SipHaPair resource as both programs see it (mirrors crds/siphapair.yaml). */
import type { ConditionType, Phase } from './names.ts';

export type VipMode = 'arp' | 'metallb' | 'kube-vip';
export type ReplicationMode = 'sync' | 'async';
export type WitnessMode = 'lease' | 'udp' | 'none';
/** spec.tls.clientAuth as the CRD spells it; the sidecar's SIPHA_TLS_CLIENT_AUTH is the lower-case word. */
export type TlsClientAuthMode = 'None' | 'Optional' | 'Require';

/** A ConfigMap or Secret in the pair's namespace whose entry ca.crt is a PEM CA bundle. */
export interface CaBundleRef {
  kind: 'ConfigMap' | 'Secret';
  name: string;
}

/**
 * How much one client address may ask of the pair (the sidecar's
 * SIPHA_REQUEST_RATE_PER_ADDRESS, SIPHA_REQUEST_BURST_PER_ADDRESS,
 * SIPHA_TCP_FLOW_RATE; docs/sidecar-config.md). Absent: the sidecar's defaults.
 */
export interface ClientLimits {
  /** Requests a second one address may send, all transports together; 0: no limit. */
  requestRatePerAddress?: number;
  /** Requests one address may send at once before its rate holds. */
  requestBurstPerAddress?: number;
  /** Messages a second one TCP/TLS connection may send; 0: unpaced. */
  tcpFlowRate?: number;
}

/** SIP over TLS at the edge (contract/tls-settings.ts says how it reaches the sidecar). */
export interface TlsSpec {
  /** A kubernetes.io/tls Secret in the pair's namespace: tls.crt, tls.key, optionally ca.crt. */
  secretName: string;
  /** Defaulted by the CRD (DEFAULT_TLS_PORT). */
  port?: number;
  /** Defaulted by the CRD to None. */
  clientAuth?: TlsClientAuthMode;
  /** Where client certificates are checked against; absent: the Secret's own ca.crt. */
  clientCA?: CaBundleRef;
  /** More certificates, chosen by the client's SNI. */
  sni?: Array<{ serverName: string; secretName: string }>;
  /** The CA bundle next hops reached over TLS are verified against; absent: the system's CAs. */
  outboundCA?: CaBundleRef;
}

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
  sidecar: { image: string; resources?: ContainerResources; clientLimits?: ClientLimits };
  ports: { sip: number; serverLink: number; egress: number; heartbeat: number; replication: number; metrics: number };
  vip: { address: string; mode: VipMode; interface?: string };
  heartbeat: { intervalMs: number; misses: number };
  replication: { mode: ReplicationMode };
  /** Who decides when the sidecars cannot hear each other (decision 0005); defaulted to lease by the CRD. */
  witness?: { mode: WitnessMode; address?: string };
  /** Ordinal (0 or 1) preferred as master when both start. */
  preferredMaster?: number;
  tls?: TlsSpec;
}

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

/**
 * One role change of the pair as status.history keeps it: a pod became master
 * at a term. What the sidecar measured (reason, detection-to-serving, the
 * registrations it held) is copied from the new master's pod; whether it was
 * in sync is what the operator last saw before the change.
 */
export interface HistoryEntry {
  /** When the new master began serving, as its sidecar said (else when the operator saw it). */
  time: string;
  term: number;
  /** The master before; absent for the pair's first election. */
  from?: string;
  to: string;
  /** The sidecar's reason for the change (e.g. peer-heartbeat-lost, peer-resigned, elected). */
  reason: string;
  /** From detection to serving on the new master (VIP held, public sockets open), as its sidecar measured it. */
  detectToServingMs?: number;
  /** The new master was an in-sync backup just before, as the operator last saw it; absent: unknown. */
  wasInSync?: boolean;
  /** Registrations the new master held when it began serving (its sidecar's state cache). */
  registrations?: number;
  /**
   * The change in one sentence, also the Event's message. Named so it sorts
   * first: kubectl describe prints fields alphabetically, so each entry opens with it.
   */
  change: string;
}

export interface SipHaPairStatus {
  phase?: Phase;
  master?: string;
  backup?: string;
  term?: number;
  failoverCount?: number;
  lastFailover?: { time: string; reason: string; gapMs?: number; from?: string; to: string };
  /** The last HISTORY_LIMIT role changes, oldest first. */
  history?: HistoryEntry[];
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
