/** A SipHaPair as the operator's unit tests build it: the defaults of the CRD, `spec` laid over them. */
import type { SipHaPair, SipHaPairStatus } from '../../contract/siphapair.ts';

export function testPair(spec: Partial<SipHaPair['spec']> = {}, namespace = 'ns'): SipHaPair {
  return {
    apiVersion: 'sipha.io/v1alpha1',
    kind: 'SipHaPair',
    metadata: { name: 'p', namespace, uid: 'u' },
    spec: {
      sipServer: { image: 'k' },
      sidecar: { image: 's' },
      ports: { sip: 5060, serverLink: 5070, egress: 5061, heartbeat: 5062, replication: 5063, metrics: 9090 },
      vip: { address: '198.18.0.100', mode: 'arp' },
      heartbeat: { intervalMs: 20, misses: 5 },
      replication: { mode: 'sync' },
      ...spec,
    },
  };
}

/** A pair reduced to what status computations read: its metadata and `status` (no spec). */
export function pairWithStatus(status?: SipHaPairStatus): SipHaPair {
  return {
    apiVersion: 'sipha.io/v1alpha1',
    kind: 'SipHaPair',
    metadata: { name: 'p', namespace: 'n', uid: 'u', generation: 1 },
    spec: {},
    status,
  } as unknown as SipHaPair;
}
