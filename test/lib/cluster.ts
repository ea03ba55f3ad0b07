/**
 * The two-node Kubernetes of hack/cluster.sh, for tests: up/down, kubectl and
 * helm against it (they run in the control-plane netns), commands in a node's
 * netns, OCI archives imported into both nodes' containerd. Names and
 * addresses are the script's (docs/cluster.md).
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = `${ROOT}hack/cluster.sh`;

export const CLUSTER = {
  /** The netns holding the bridge `br0` that every node and client joins. */
  switchNs: 'sipha-sw',
  controlPlaneNs: 'sipha-cp',
  /** The nodes' /24 on the bridge: cp .2, nodes .11/.12, VIPs .100-.199, test clients .200-.250. */
  subnet: '198.18.8',
  apiServer: 'https://198.18.8.2:6443',
  nodes: { 'node-a': '198.18.8.11', 'node-b': '198.18.8.12' } as const,
  podCidr: '198.19.0.0/17',
  serviceCidr: '198.19.128.0/20',
  apiServiceIp: '198.19.128.1',
  dnsIp: '198.19.128.10',
  /** The images every node has from `up`. */
  pauseImage: 'sipha.local/pause:3.10',
} as const;

export type NodeName = keyof typeof CLUSTER.nodes;
export const NODES = Object.keys(CLUSTER.nodes) as NodeName[];

export function nodeNs(node: NodeName): string {
  return `sipha-${node}`;
}

/** The state dir (pids, logs, kubeconfig): SIPHA_CLUSTER_DIR or /tmp/sipha-cluster. */
export function clusterDir(): string {
  return process.env.SIPHA_CLUSTER_DIR ?? '/tmp/sipha-cluster';
}

export interface RunResult {
  code: number;
  out: string;
  err: string;
}

function run(args: string[], input?: string): RunResult {
  try {
    const out = execFileSync('bash', [SCRIPT, ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      input,
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
    return { code: 0, out, err: '' };
  } catch (e) {
    const err = e as { status?: number; stdout?: string; stderr?: string };
    return { code: err.status ?? 1, out: err.stdout ?? '', err: err.stderr ?? '' };
  }
}

function must(args: string[], input?: string): string {
  const r = run(args, input);
  if (r.code !== 0) throw new Error(`hack/cluster.sh ${args.join(' ')} failed (${r.code}):\n${r.err.slice(-4000)}`);
  return r.out;
}

/** Brings the cluster up (both nodes Ready, CoreDNS answering); throws with the script's stderr. */
export function clusterUp(): void {
  must(['up']);
}

/** Removes everything `up` made; safe to call when it is not up. */
export function clusterDown(): void {
  must(['down']);
}

export function clusterStatus(): RunResult {
  return run(['status']);
}

export function kubectl(args: string[], input?: string): string {
  return must(['kubectl', ...args], input);
}

/** kubectl that does not throw. */
export function kubectlTry(args: string[], input?: string): RunResult {
  return run(['kubectl', ...args], input);
}

export function helm(args: string[]): string {
  return must(['helm', ...args]);
}

/** Runs a command in a node's netns (also 'cp' or 'switch'), as a hostNetwork pod would see the network. */
export function nodeExec(node: NodeName | 'cp' | 'switch', cmd: string, args: string[] = [], input?: string): string {
  return must(['exec', node, cmd, ...args], input);
}

/** Imports OCI archives (e.g. from hack/images.sh) into both nodes' containerd. */
export function importImages(archives: string[]): void {
  must(['import', ...archives]);
}

/** A node's cable pulled and power cut: its switch port goes down, kubelet, kube-proxy, containerd, shims and containers are SIGKILLed. */
export function nodeCrash(node: NodeName): void {
  must(['node-crash', node]);
}

/** The crashed node back, as after a reboot (runtime state cleared, agents restarted); returns once its kubelet is up and the node Ready. */
export function nodeBoot(node: NodeName): void {
  must(['node-boot', node]);
}

/** kube-apiserver stopped (etcd keeps the state): an outage of the control plane. */
export function apiserverStop(): void {
  must(['apiserver-stop']);
}

/** kube-apiserver started again; returns once it is ready. */
export function apiserverStart(): void {
  must(['apiserver-start']);
}
