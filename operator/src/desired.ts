/**
 * What a SipHaPair should own, as pure functions of the pair: the objects
 * the reconciler server-side-applies. No I/O here; tested without a cluster.
 */

import type { KubernetesObject } from '@kubernetes/client-node';
import { keyEntry, LINK_TOKEN_ENTRY, SIGN_ID_ENTRY, WITNESS_KEY_ENTRY } from '../../contract/key-files.ts';
import {
  API_VERSION,
  APP_LABELS,
  GROUP,
  KIND,
  PAIR_LABEL,
  PLURAL,
  ROLE_LABEL,
  sidecarServiceAccount,
  witnessLeaseName,
} from '../../contract/names.ts';
import type { ClientLimits, SipHaPair } from '../../contract/siphapair.ts';
import { witnessKey } from '../../contract/witness-wire.ts';
import { containerResources, DEFAULT_RESOURCES } from './resources.ts';
import { tlsPod, tlsPort } from './tls-pod.ts';

export type Obj = KubernetesObject & Record<string, unknown>;

export const names = (pair: string) => ({
  statefulSet: pair,
  peers: `${pair}-peers`,
  vip: `${pair}-vip`,
  secret: `${pair}-replication`,
  serviceAccount: sidecarServiceAccount(pair),
  role: sidecarServiceAccount(pair),
  pdb: pair,
  pods: [`${pair}-0`, `${pair}-1`],
  witness: witnessLeaseName(pair),
  egress: `${pair}-egress`,
});

export function selectorLabels(p: SipHaPair): Record<string, string> {
  return { [PAIR_LABEL]: p.metadata.name };
}

function meta(p: SipHaPair, name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    namespace: p.metadata.namespace,
    labels: { ...APP_LABELS, ...selectorLabels(p) },
    ownerReferences: [
      {
        apiVersion: API_VERSION,
        kind: KIND,
        name: p.metadata.name,
        uid: p.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ],
    ...extra,
  };
}

export function statefulSet(p: SipHaPair): Obj {
  const s = p.spec;
  const n = names(p.metadata.name);
  const arp = s.vip.mode === 'arp';
  const tls = tlsPod(s);
  // The link's shared secret (contract/link.ts), in both containers. Optional: a pair whose
  // Secret predates it runs without one in both, never with it in one container only.
  const linkToken = {
    name: 'SIPHA_LINK_TOKEN',
    valueFrom: { secretKeyRef: { name: n.secret, key: LINK_TOKEN_ENTRY, optional: true } },
  };
  const serverContainer: Record<string, unknown> = {
    name: 'sip-server',
    image: s.sipServer.image,
    ...(s.sipServer.command ? { command: s.sipServer.command } : {}),
    ...(s.sipServer.args ? { args: s.sipServer.args } : {}),
    env: [{ name: 'SIPHA_PUBLIC_IP', value: s.vip.address }, linkToken, ...(tls?.serverEnv ?? []), ...(s.sipServer.env ?? [])],
    ...(s.sipServer.configMap ? { volumeMounts: [{ name: 'sip-config', mountPath: s.sipServer.configMountPath }] } : {}),
    resources: containerResources(s.sipServer.resources, DEFAULT_RESOURCES.sipServer),
  };
  const env = (name: string, value: string | number) => ({ name, value: String(value) });
  const sidecar = {
    name: 'sipha-sidecar',
    image: s.sidecar.image,
    env: [
      { name: 'SIPHA_POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'SIPHA_POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'SIPHA_NODE_ADDRESS', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      env('SIPHA_PAIR', p.metadata.name),
      env('SIPHA_PEERS_SERVICE', n.peers),
      env('SIPHA_SIP_PORT', s.ports.sip),
      env('SIPHA_SERVER_PORT', s.ports.serverLink),
      env('SIPHA_EGRESS_PORT', s.ports.egress),
      env('SIPHA_HEARTBEAT_PORT', s.ports.heartbeat),
      env('SIPHA_REPLICATION_PORT', s.ports.replication),
      env('SIPHA_HTTP_PORT', s.ports.metrics),
      env('SIPHA_HEARTBEAT_INTERVAL_MS', s.heartbeat.intervalMs),
      env('SIPHA_HEARTBEAT_MISSES', s.heartbeat.misses),
      env('SIPHA_REPLICATION_MODE', s.replication.mode),
      env('SIPHA_VIP', s.vip.address),
      env('SIPHA_VIP_MODE', s.vip.mode),
      ...(s.vip.interface ? [env('SIPHA_VIP_INTERFACE', s.vip.interface)] : []),
      ...(s.preferredMaster !== undefined ? [env('SIPHA_PREFERRED_MASTER', s.preferredMaster)] : []),
      ...witnessEnv(s),
      ...clientLimitsEnv(s.sidecar.clientLimits),
      env('SIPHA_KEY_DIR', KEY_DIR),
      linkToken,
      ...(tls?.sidecarEnv ?? []),
    ],
    ports: [
      { name: 'sip-udp', containerPort: s.ports.sip, protocol: 'UDP' },
      { name: 'sip-tcp', containerPort: s.ports.sip, protocol: 'TCP' },
      { name: 'heartbeat', containerPort: s.ports.heartbeat, protocol: 'UDP' },
      { name: 'replication', containerPort: s.ports.replication, protocol: 'TCP' },
      { name: 'metrics', containerPort: s.ports.metrics, protocol: 'TCP' },
      ...(tls ? [tls.port] : []),
    ],
    readinessProbe: { httpGet: { path: '/readyz', port: s.ports.metrics }, periodSeconds: 2 },
    livenessProbe: { httpGet: { path: '/healthz', port: s.ports.metrics }, periodSeconds: 5, failureThreshold: 3 },
    ...(arp ? { securityContext: { capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } } } : {}),
    // The API token and the pair's keys, in this container only (see apiTokenVolume, keyVolume).
    volumeMounts: [
      { name: API_TOKEN_VOLUME, mountPath: SERVICE_ACCOUNT_DIR, readOnly: true },
      { name: KEY_VOLUME, mountPath: KEY_DIR, readOnly: true },
      ...(tls?.sidecarMounts ?? []),
    ],
    resources: containerResources(s.sidecar.resources, DEFAULT_RESOURCES.sidecar),
  };
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(p, n.statefulSet),
    spec: {
      replicas: 2,
      serviceName: n.peers,
      podManagementPolicy: 'Parallel',
      // Pods change only when the operator deletes them (upgrade.ts): backup first, a planned
      // switchover, then the old master. RollingUpdate would delete the master itself when it
      // has the higher ordinal: an extra switchover, or two.
      updateStrategy: { type: 'OnDelete' },
      selector: { matchLabels: selectorLabels(p) },
      template: {
        metadata: { labels: { ...APP_LABELS, ...selectorLabels(p) } },
        spec: {
          serviceAccountName: n.serviceAccount,
          // Not in every container: the SIP server gets no API token (apiTokenVolume).
          automountServiceAccountToken: false,
          // No shareProcessNamespace: the sidecar watches its server over the link and
          // by SIP, and a shared PID namespace would show the server the sidecar's
          // environment and files through /proc.
          ...(arp ? { hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' } : {}),
          affinity: {
            podAntiAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: [
                { labelSelector: { matchLabels: selectorLabels(p) }, topologyKey: 'kubernetes.io/hostname' },
              ],
            },
          },
          containers: [serverContainer, sidecar],
          volumes: [
            apiTokenVolume(),
            // All the Secret's entries, no `items`: a rotation adds key-<n> files (decision 0012).
            { name: KEY_VOLUME, secret: { secretName: n.secret, defaultMode: 0o400 } },
            ...(s.sipServer.configMap ? [{ name: 'sip-config', configMap: { name: s.sipServer.configMap } }] : []),
            ...(tls?.volumes ?? []),
          ],
        },
      },
    },
  };
}

const API_TOKEN_VOLUME = 'sipha-api-token';
/**
 * The replication Secret as files (sidecar/src/ha/keyring.ts): never an environment
 * variable, which /proc/<pid>/environ shows; the kubelet rewrites the files in place
 * when a rotation patches the Secret, and the sidecar reads them every second.
 */
const KEY_VOLUME = 'sipha-keys';
export const KEY_DIR = '/etc/sipha/keys';
/** Where client libraries look for the in-cluster credentials. */
const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * What automountServiceAccountToken would put into every container (a bound,
 * expiring token, the cluster CA, the namespace), as a volume the sidecar
 * alone mounts: the SIP server, which parses what the internet sends, holds
 * no credentials for the API server. The kubelet refreshes the token; the
 * client re-reads the file.
 */
function apiTokenVolume() {
  return {
    name: API_TOKEN_VOLUME,
    projected: {
      defaultMode: 0o644,
      sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: 3600 } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
      ],
    },
  };
}

/** spec.sidecar.clientLimits as the sidecar's variables; only what the spec sets (the rest: the sidecar's defaults). */
function clientLimitsEnv(l: ClientLimits | undefined): Array<{ name: string; value: string }> {
  const vars: Array<[string, number | undefined]> = [
    ['SIPHA_REQUEST_RATE_PER_ADDRESS', l?.requestRatePerAddress],
    ['SIPHA_REQUEST_BURST_PER_ADDRESS', l?.requestBurstPerAddress],
    ['SIPHA_TCP_FLOW_RATE', l?.tcpFlowRate],
  ];
  return vars.filter(([, v]) => v !== undefined).map(([name, v]) => ({ name, value: String(v) }));
}

/** Headless Service so the two sidecars find each other (ready or not). */
export function peersService(p: SipHaPair): Obj {
  const s = p.spec;
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(p, names(p.metadata.name).peers),
    spec: {
      clusterIP: 'None',
      publishNotReadyAddresses: true,
      selector: selectorLabels(p),
      ports: [
        { name: 'heartbeat', port: s.ports.heartbeat, protocol: 'UDP' },
        { name: 'replication', port: s.ports.replication, protocol: 'TCP' },
      ],
    },
  };
}

/** The VIP in metallb / kube-vip modes: a LoadBalancer pinned to the VIP, selecting the master only. */
export function vipService(p: SipHaPair): Obj | null {
  const s = p.spec;
  if (s.vip.mode === 'arp') return null;
  const annotation = s.vip.mode === 'metallb' ? 'metallb.io/loadBalancerIPs' : 'kube-vip.io/loadbalancerIPs';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(p, names(p.metadata.name).vip, { annotations: { [annotation]: s.vip.address } }),
    spec: {
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      selector: { ...selectorLabels(p), [ROLE_LABEL]: 'master' },
      ports: [
        { name: 'sip-udp', port: s.ports.sip, targetPort: s.ports.sip, protocol: 'UDP' },
        { name: 'sip-tcp', port: s.ports.sip, targetPort: s.ports.sip, protocol: 'TCP' },
        ...(s.tls ? [{ name: 'sip-tls', port: tlsPort(s.tls), targetPort: tlsPort(s.tls), protocol: 'TCP' }] : []),
      ],
    },
  };
}

/** On the egress agent's pods: the pair they serve (not PAIR_LABEL, which selects the pair's own pods). */
export const EGRESS_OF_LABEL = 'sipha.io/egress-of';

/**
 * LB modes: the egress agent (sidecar/src/egress), one pod per node, which
 * SNATs the pair pods' SIP egress (source port = the SIP port, UDP and TCP) to
 * the VIP in the node's own nftables, so that requests the master relays leave
 * from the VIP and their answers come back through the node's conntrack
 * (decision 0010). In the node's namespace, not the pod's: there, the answer
 * would miss kube-proxy's DNAT. hostNetwork with NET_ADMIN and nothing else;
 * no API token (it reads the pod addresses from the peers Service by DNS). Its
 * pods carry no pair label: the pair's Services and the operator's pod list
 * select by that label.
 */
export function egressDaemonSet(p: SipHaPair): Obj | null {
  const s = p.spec;
  if (s.vip.mode === 'arp') return null;
  const n = names(p.metadata.name);
  const labels = { 'app.kubernetes.io/name': 'sipha-egress', [EGRESS_OF_LABEL]: p.metadata.name };
  const env = (name: string, value: string | number) => ({ name, value: String(value) });
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: meta(p, n.egress),
    spec: {
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          containers: [
            {
              name: 'sipha-egress',
              image: s.sidecar.image,
              command: ['node', 'sidecar/src/egress/main.ts'],
              env: [
                { name: 'SIPHA_POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                env('SIPHA_PAIR', p.metadata.name),
                env('SIPHA_PEERS_SERVICE', n.peers),
                env('SIPHA_VIP', s.vip.address),
                env('SIPHA_SIP_PORT', s.ports.sip),
              ],
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
              },
              resources: {
                requests: { cpu: '10m', memory: '64Mi' },
                limits: { cpu: '100m', memory: '128Mi' },
              },
            },
          ],
        },
      },
    },
  };
}

export function serviceAccount(p: SipHaPair): Obj {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(p, names(p.metadata.name).serviceAccount) };
}

/**
 * The sidecar may read and patch its pair's two pods by name (reads: the terms
 * recorded on both, read back at start; a watch of its own pod by name) and
 * read its own SipHaPair (status.term, so terms never restart). RBAC cannot
 * tell the two pods apart (one ServiceAccount for both): the chart's admission
 * policy narrows patch to the sidecar's own pod and its sipha keys
 * (charts/sipha/templates/sidecar-policy.yaml).
 */
export function role(p: SipHaPair): Obj {
  const n = names(p.metadata.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: meta(p, n.role),
    rules: [
      // A list or watch by name (fieldSelector metadata.name) is allowed by resourceNames.
      { apiGroups: [''], resources: ['pods'], resourceNames: n.pods, verbs: ['get', 'list', 'watch', 'patch'] },
      { apiGroups: [GROUP], resources: [PLURAL], resourceNames: [p.metadata.name], verbs: ['get'] },
      ...((p.spec.witness?.mode ?? 'lease') === 'lease'
        ? [
            // The witness Lease: read, watched and renewed by name (a watch by name is a list/watch
            // with fieldSelector metadata.name); create cannot be limited by name.
            {
              apiGroups: ['coordination.k8s.io'],
              resources: ['leases'],
              resourceNames: [n.witness],
              verbs: ['get', 'update', 'list', 'watch'],
            },
            { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
          ]
        : []),
    ],
  };
}

/** SIPHA_WITNESS for the sidecar: lease (the default), udp:<ip:port>, or nothing for none. */
function witnessEnv(s: SipHaPair['spec']): Array<{ name: string; value: string }> {
  const w = s.witness ?? { mode: 'lease' };
  if (w.mode === 'none') return [];
  return [{ name: 'SIPHA_WITNESS', value: w.mode === 'lease' ? 'lease' : `udp:${w.address}` }];
}

export function roleBinding(p: SipHaPair): Obj {
  const n = names(p.metadata.name);
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: meta(p, n.role),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: n.role },
    subjects: [{ kind: 'ServiceAccount', name: n.serviceAccount, namespace: p.metadata.namespace }],
  };
}

/** Voluntary disruptions (drains) take one pod at a time: the other keeps serving. */
export function pdb(p: SipHaPair): Obj {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(p, names(p.metadata.name).pdb),
    spec: { maxUnavailable: 1, selector: { matchLabels: selectorLabels(p) } },
  };
}

/**
 * The replication key: made once with random bytes, never part of an apply
 * (that would rotate it); rotations patch it (key-rotation.ts). Keys are
 * stored as base64 text, as the sidecar's key files and the UDP arbiter's
 * SIPHA_WITNESS_KEY take them. witness-key is derived from the first key and
 * kept across rotations, so an arbiter host never needs a new one.
 */
export function replicationSecret(p: SipHaPair, key: Buffer, linkToken: string): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: meta(p, names(p.metadata.name).secret),
    type: 'Opaque',
    stringData: {
      [keyEntry(1)]: key.toString('base64'),
      [SIGN_ID_ENTRY]: '1',
      [WITNESS_KEY_ENTRY]: witnessKey(key).toString('base64'),
      [LINK_TOKEN_ENTRY]: linkToken,
    },
  };
}

/**
 * Everything applied on each reconcile, in dependency order. `holdTls`: spec.tls names
 * something missing or unusable (tls-check.ts), so what carries it (the StatefulSet,
 * the VIP Service) stays as it is: pods started now could not mount it, and the
 * running ones keep serving with what they have.
 */
export function appliedObjects(p: SipHaPair, opts: { holdTls?: boolean } = {}): Obj[] {
  const vip = opts.holdTls ? null : vipService(p);
  const egress = egressDaemonSet(p);
  return [
    serviceAccount(p),
    role(p),
    roleBinding(p),
    peersService(p),
    ...(vip ? [vip] : []),
    pdb(p),
    ...(opts.holdTls ? [] : [statefulSet(p)]),
    ...(egress ? [egress] : []),
  ];
}
