/**
 * MetalLB (L2 mode) on the two-node cluster of hack/cluster.sh, for the
 * metallb-mode e2e and the cluster benchmark: built from its Go module by
 * hack/build-metallb.sh, installed from the module's own native manifest
 * (webhooks off), a pool holding only the pair's VIP, and who answers ARP for
 * the VIP as a client on the nodes' bridge sees it.
 */
import * as k from './cluster.ts';
import { sh } from './cluster-pair.ts';
import type { Host } from './netbed.ts';
import { sleep, until } from './procs.ts';

export const METALLB_NS = 'metallb-system';
export const POOL = 'sipha-vip';

/** Builds (or finds cached) MetalLB: returns the directory holding metallb.yaml and images/. */
export function buildMetallb(): string {
  return sh('bash', ['hack/build-metallb.sh']).trim().split('\n').at(-1) as string;
}

/**
 * Imports the images, applies the manifest, waits for the controller and one
 * speaker per node, then gives MetalLB a pool of exactly `vip` announced in L2.
 */
export async function installMetallb(dir: string, vip: string): Promise<void> {
  k.importImages([`${dir}/images/metallb-controller.tar`, `${dir}/images/metallb-speaker.tar`]);
  // Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
  k.kubectl(['apply', '--server-side', '-f', `${dir}/metallb.yaml`]);
  k.kubectl(['-n', METALLB_NS, 'rollout', 'status', 'deployment/controller', '--timeout=180s']);
  k.kubectl(['-n', METALLB_NS, 'rollout', 'status', 'daemonset/speaker', '--timeout=180s']);
  const pool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: ${POOL}, namespace: ${METALLB_NS}}
spec:
  addresses: ["${vip}/32"]
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: ${POOL}, namespace: ${METALLB_NS}}
spec:
  ipAddressPools: [${POOL}]
`;
  // The CRDs are Established a moment after the apply returns.
  await until(() => k.kubectlTry(['apply', '-f', '-'], pool).code === 0, 30_000, 'the IPAddressPool applied');
}

/** The MAC address of each node's eth0 (the one the speaker answers ARP with). */
export function nodeMacs(): Record<string, k.NodeName> {
  const macs: Record<string, k.NodeName> = {};
  for (const n of k.NODES) {
    const m = /link\/ether ([0-9a-f:]{17})/.exec(k.nodeExec(n, 'ip', ['-o', 'link', 'show', 'dev', 'eth0']));
    if (!m) throw new Error(`no MAC on ${n}'s eth0`);
    macs[m[1] as string] = n;
  }
  return macs;
}

/**
 * The nodes that answer ARP for `vip`, as a client on the bridge sees them
 * (arping, 3 requests): exactly one while MetalLB announces it from one node.
 */
export function arpAnswerers(client: Host, vip: string): string[] {
  const macs = nodeMacs();
  let out = '';
  try {
    out = client.run('arping', ['-c', '3', '-w', '3', '-I', client.iface, vip]);
  } catch (e) {
    out = (e as { stdout?: string }).stdout ?? ''; // exit 1: no reply
  }
  const seen = new Set<string>();
  for (const m of out.matchAll(/\[([0-9A-Fa-f:]{17})\]/g)) {
    const mac = (m[1] as string).toLowerCase();
    seen.add(macs[mac] ?? `unknown ${mac}`);
  }
  return [...seen].sort();
}

/** Waits until the client sees exactly `node` answering ARP for the VIP. */
export async function untilAnnouncedFrom(client: Host, vip: string, node: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  let last: string[] = [];
  while (Date.now() < end) {
    last = arpAnswerers(client, vip);
    if (last.length === 1 && last[0] === node) return;
    await sleep(500);
  }
  throw new Error(`${vip} not announced from ${node} alone within ${ms} ms (answering: ${last.join(', ') || 'nobody'})`);
}

/** The Service's LoadBalancer ingress IPs (set by MetalLB's controller). */
export function ingressIps(ns: string, service: string): string[] {
  const r = k.kubectlTry(['-n', ns, 'get', 'service', service, '-o', 'jsonpath={.status.loadBalancer.ingress[*].ip}']);
  return r.code === 0 ? r.out.trim().split(/\s+/).filter(Boolean) : [];
}

/** The pod IPs the Service's EndpointSlices list as ready. */
export function readyEndpoints(ns: string, service: string): string[] {
  const out = k.kubectl(['-n', ns, 'get', 'endpointslices', '-l', `kubernetes.io/service-name=${service}`, '-o', 'json']);
  const list = JSON.parse(out) as {
    items: Array<{ endpoints?: Array<{ addresses: string[]; conditions?: { ready?: boolean } }> }>;
  };
  return list.items.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready).flatMap((e) => e.addresses));
}

/** MetalLB's nodeAssigned Events on a Service ("announcing from node "node-b" with protocol "layer2"), with when each was last emitted. */
export function nodeAssignedEvents(ns: string, service: string): Array<{ message: string; last: number }> {
  const out = k.kubectl([
    '-n',
    ns,
    'get',
    'events',
    '--field-selector',
    `involvedObject.kind=Service,involvedObject.name=${service},reason=nodeAssigned`,
    '-o',
    'json',
  ]);
  const list = JSON.parse(out) as { items: Array<{ message: string; lastTimestamp?: string; eventTime?: string }> };
  return list.items.map((e) => ({ message: e.message, last: Date.parse(e.lastTimestamp ?? e.eventTime ?? '') }));
}

/** The speakers' logs (JSON lines), for the timeline of an announcement. */
export function speakerLogs(sinceSeconds: number): string {
  return k.kubectl([
    '-n',
    METALLB_NS,
    'logs',
    '-l',
    'component=speaker',
    '--tail=-1',
    `--since=${sinceSeconds}s`,
    '--prefix',
    '--request-timeout=20s',
  ]);
}
