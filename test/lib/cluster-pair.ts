/**
 * The example pair (examples/siphapair.yaml, arp mode) on the two-node cluster
 * of hack/cluster.sh, as the e2e test and the cluster benchmark see it: its
 * pods, its printer columns, its Kamailios (kamcmd in the pod), and the
 * pod-level faults both inject.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { VipMode } from '../../contract/siphapair.ts';
import * as k from './cluster.ts';
import type { Kamailio } from './kamailio.ts';
import { NetBed } from './netbed.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const VIP = '198.18.8.100';
export const NS = 'sip';

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
}

export const kubectl = (...args: string[]) => k.kubectl(args);
export const kubectlIn = (input: string, ...args: string[]) => k.kubectl(args, input);

export interface PodView {
  name: string;
  node: string;
  uid: string;
  phase: string;
  role: string;
  ready: boolean;
  restarts: Record<string, number>;
}

export function pods(): PodView[] {
  const list = JSON.parse(kubectl('-n', NS, 'get', 'pods', '-l', 'sipha.io/pair=sip-edge', '-o', 'json')) as {
    items: Array<{
      metadata: { name: string; uid: string; labels?: Record<string, string> };
      spec: { nodeName?: string };
      status: {
        phase: string;
        conditions?: Array<{ type: string; status: string }>;
        containerStatuses?: Array<{ name: string; restartCount: number }>;
      };
    }>;
  };
  return list.items.map((p) => ({
    name: p.metadata.name,
    uid: p.metadata.uid,
    node: p.spec.nodeName ?? '',
    phase: p.status.phase,
    role: p.metadata.labels?.['sipha.io/role'] ?? '',
    ready: p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    restarts: Object.fromEntries((p.status.containerStatuses ?? []).map((c) => [c.name, c.restartCount])),
  }));
}

export const podWithRole = (role: string) => pods().find((p) => p.role === role);
/**
 * The pod's own label says master. Not podWithRole('master'): a crashed node's pod keeps saying
 * master until the operator fences it (later still when the operator's leader died with that node).
 */
export const isMaster = (name: string) => pods().some((p) => p.name === name && p.role === 'master');

/** `kubectl get shp` as a user reads it: the printer columns. */
export function shpRow(): Record<string, string> {
  const out = kubectl('-n', NS, 'get', 'shp', 'sip-edge').trim().split('\n');
  const heads = (out[0] as string).split(/\s{2,}/);
  const cells = (out[1] as string).split(/\s{2,}/);
  return Object.fromEntries(heads.map((h, i) => [h, cells[i] ?? '']));
}

/** What a sidecar says about its role: role changes and fences, the usual story of a failure. */
const ROLE_STORY = {
  pattern: /role change|fence|role label|serving as master|peer heartbeats|rejoin|in sync/,
  lines: 15,
  tail: 2000,
};

/**
 * What to print when the pair does not settle: the pods, the pair's Events and
 * what each sidecar said (its role changes and fences, unless told what else to
 * pick), so a failure in CI says who wrote what.
 */
export function pairStory(said: { pattern: RegExp; lines: number; tail: number } = ROLE_STORY): string {
  const events = k
    .kubectlTry(['-n', NS, 'get', 'events', '--field-selector', 'involvedObject.kind=SipHaPair', '--sort-by=.lastTimestamp'])
    .out.trim();
  const logs = pods().map((p) => `${p.name}:\n${sidecarSaid(p.name, said.pattern, said.lines, said.tail)}`);
  return [JSON.stringify(pods()), events, ...logs].join('\n');
}

/** The last `lines` lines matching `pattern` of a pod's sidecar log (of its last `tail`), for a failure's story. */
export function sidecarSaid(pod: string, pattern: RegExp, lines: number, tail: number): string {
  return k
    .kubectlTry(['-n', NS, 'logs', pod, '-c', 'sipha-sidecar', '--tail', String(tail)])
    .out.split('\n')
    .filter((l) => pattern.test(l))
    .slice(-lines)
    .join('\n');
}

/** The pair settled: one master, one ready backup, on two nodes, phase Replicating and the Ready condition True. */
export function settled(): boolean {
  const ps = pods();
  if (ps.length !== 2 || !ps.every((p) => p.phase === 'Running' && p.ready)) return false;
  if (ps.filter((p) => p.role === 'master').length !== 1 || ps.filter((p) => p.role === 'backup').length !== 1) return false;
  try {
    const st = JSON.parse(kubectl('-n', NS, 'get', 'shp', 'sip-edge', '-o', 'json')).status as {
      conditions?: Array<{ type: string; status: string }>;
    };
    // Ready (master and backup), and Replicating: the backup holds the state, so a fault that
    // follows tests the failover, not a takeover by a backup that was still being resynced.
    const on = (type: string) => st.conditions?.some((c) => c.type === type && c.status === 'True') === true;
    return shpRow().PHASE === 'Replicating' && on('Ready') && on('Replicating');
  } catch {
    return false;
  }
}

/** kamcmd inside a pod's server container, on the ctl socket the example configures. */
export function podKamailio(pod: string): Kamailio {
  return {
    kamcmd: (args, input) =>
      k.kubectl(
        ['-n', NS, 'exec', '-i', pod, '-c', 'sip-server', '--', 'kamcmd', '-s', 'unix:/run/kamailio/kamailio_ctl', ...args],
        input ?? '',
      ),
  } as Kamailio;
}

/** The host PIDs of the processes of one container of a pod (by the pod's cgroup, which names its UID). */
export function containerPids(pod: PodView, cmdline: string): number[] {
  const uid = pod.uid.replaceAll('-', '_');
  const found: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (!readFileSync(`/proc/${d}/cmdline`, 'utf8').replaceAll('\0', ' ').includes(cmdline)) continue;
      const cg = readFileSync(`/proc/${d}/cgroup`, 'utf8');
      if (cg.includes(pod.uid) || cg.includes(uid)) found.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

export type PodFault = 'kamailio-kill' | 'pod-delete' | 'sidecar-kill' | 'node-crash' | 'operator-delete';

/** Injects one fault on the master's pod (node-crash: call k.nodeBoot(master.node) to bring the node back). */
export function injectFault(fault: PodFault, master: PodView): void {
  prepareFault(fault, master)();
}

/**
 * The fault, ready to fire: whatever must be looked up first (the container's
 * processes) is looked up now, so a bench that stamps the fault instant just
 * before firing measures the product, not the search through /proc.
 */
export function prepareFault(fault: PodFault, master: PodView): () => void {
  if (fault === 'kamailio-kill' || fault === 'sidecar-kill') {
    // kill -9 inside the container (from the host: the container's processes are ours to see).
    const pids = containerPids(master, fault === 'kamailio-kill' ? 'kamailio' : 'sidecar/src/main.ts');
    if (pids.length === 0) throw new Error(`no ${fault} processes found in ${master.name}`);
    return () => {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // a worker that ended with its main process
        }
      }
    };
  }
  if (fault === 'node-crash') return () => k.nodeCrash(master.node as k.NodeName);
  if (fault === 'operator-delete')
    // The operator's pods go away in the middle of a failover: the data plane does not need them.
    // The master's pod first: the fault is stamped before this runs, and each kubectl through
    // hack/cluster.sh takes a few hundred ms here, which the gap used to count (operator-delete
    // gaps of 641-1069 ms against 160-304 for a pod delete alone, sessions 14-16).
    return () => {
      kubectl('-n', NS, 'delete', 'pod', master.name, '--wait=false');
      kubectl('-n', 'sipha-system', 'delete', 'pod', '-l', 'app.kubernetes.io/name=sipha-operator', '--wait=false');
    };
  return () => kubectl('-n', NS, 'delete', 'pod', master.name, '--wait=false');
}

/** The nodes that hold the VIP on their interface. */
export function vipHolders(): string[] {
  return Object.keys(k.CLUSTER.nodes).filter((n) =>
    k.nodeExec(n as k.NodeName, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']).includes(` ${VIP}/32`),
  );
}

/** The cluster up with the product's images (hack/images.sh) imported on both nodes. */
export function clusterWithImages(): void {
  const images = sh('bash', ['hack/images.sh', 'build']).trim().split('\n');
  k.clusterUp();
  k.importImages(images.map((l) => l.split(' ')[1] as string));
}

/** SIP clients on the nodes' bridge: hosts `client` (.201) and `uas` (.202). */
export function sipClients(): NetBed {
  return NetBed.attach(k.CLUSTER.switchNs, k.CLUSTER.subnet, [
    { name: 'client', octet: 201 },
    { name: 'uas', octet: 202 },
  ]);
}

/** helm install of the chart, waiting for the operator's Deployment. */
export function installOperator(): void {
  k.helm([
    'install',
    'sipha',
    `${ROOT}charts/sipha`,
    '--namespace',
    'sipha-system',
    '--create-namespace',
    '--wait',
    '--timeout',
    '180s',
  ]);
}

/**
 * As the example's header says: the Kamailio ConfigMap, then examples/siphapair.yaml
 * (with this cluster's VIP; in an LB mode, that mode and no interface, as a user edits it).
 */
export function applyExample({ vipMode = 'arp', tlsDir }: { vipMode?: VipMode; tlsDir?: string } = {}): void {
  kubectl('create', 'namespace', NS);
  kubectl('-n', NS, 'create', 'configmap', 'kamailio-config', `--from-file=${ROOT}examples/kamailio/kamailio.cfg`);
  let example = readFileSync(`${ROOT}examples/siphapair.yaml`, 'utf8').replace(/address: \S+/, `address: ${VIP}`);
  if (tlsDir !== undefined) {
    // SIP over TLS too: a kubernetes.io/tls Secret (test/lib/tls-certs.ts) named by spec.tls.
    kubectl('-n', NS, 'create', 'secret', 'tls', 'sip-edge-tls', `--cert=${tlsDir}/tls.crt`, `--key=${tlsDir}/tls.key`);
    const edited = example.replace(/\n {2}vip:\n/, '\n  tls:\n    secretName: sip-edge-tls\n  vip:\n');
    if (edited === example) throw new Error('examples/siphapair.yaml: no "vip:" under spec to put tls before');
    example = edited;
  }
  if (vipMode !== 'arp') {
    const edited = example.replace(/mode: arp\n\s*interface: \S+\n/, `mode: ${vipMode}\n`);
    if (edited === example) throw new Error('examples/siphapair.yaml: no "mode: arp" + "interface:" to edit');
    example = edited;
  }
  kubectlIn(example, '-n', NS, 'apply', '-f', '-');
}
