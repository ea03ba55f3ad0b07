/**
 * hack/cluster.sh's life cycle (issue 10, item 2): `up` gives two Ready nodes
 * with real kubelets and containerd, the scheduler places a pod on each, pods
 * reach each other across nodes, cluster DNS answers through its ClusterIP and
 * the API server reaches the kubelets; `down` then leaves no process,
 * namespace, mount, cgroup or file of the cluster behind, compared with a
 * snapshot taken before `up`.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CLUSTER,
  clusterDir,
  clusterDown,
  clusterStatus,
  clusterUp,
  kubectl,
  NODES,
  type NodeName,
  nodeBoot,
  nodeCrash,
  nodeExec,
  nodeNs,
} from '../lib/cluster.ts';
import { until } from '../lib/procs.ts';

const OUR_NETNS = [CLUSTER.switchNs, CLUSTER.controlPlaneNs, ...NODES.map(nodeNs)];
const HOST_PATHS = [
  '/var/lib/cni',
  '/run/containerd',
  '/opt/containerd',
  '/var/log/pods',
  '/var/log/containers',
  '/etc/cni',
  '/var/lib/kubelet',
];
const SYSCTLS = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops'];

const read = (p: string): string => {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
};
const netnsNames = (): string[] => (existsSync('/run/netns') ? readdirSync('/run/netns').sort() : []);
const mountPoints = (): string[] =>
  read('/proc/self/mountinfo')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[4] as string)
    // hosts of netns beds that other suites create meanwhile are not ours
    .filter((m) => !/^\/run\/netns\/sipha-[0-9a-f]{6}-/.test(m))
    .sort();
const cgroupHierarchies = (): string[] =>
  read('/proc/self/mounts')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2')
    .map((f) => f[1] as string);
const cgroupTops = (): string[] =>
  cgroupHierarchies()
    .flatMap((h) =>
      readdirSync(h, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => join(h, d.name)),
    )
    .sort();
/** PIDs in a cgroup tree (any depth). */
function cgroupPids(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const pids = read(join(dir, 'cgroup.procs')).split('\n').filter(Boolean).map(Number);
  for (const d of readdirSync(dir, { withFileTypes: true })) if (d.isDirectory()) pids.push(...cgroupPids(join(dir, d.name)));
  return pids;
}
const statField = (pid: number, i: number): string => read(`/proc/${pid}/stat`).split(') ')[1]?.split(' ')[i] ?? '';
const startTime = (pid: number): string => statField(pid, 19);
/** A zombie has ended; only its parent (here often init, which reaps lazily) can remove it. */
const running = (pid: number): boolean => !['', 'Z', 'X'].includes(statField(pid, 0));
const nsInode = (pid: number, kind: 'net' | 'mnt'): string => {
  try {
    return readlinkSync(`/proc/${pid}/ns/${kind}`);
  } catch {
    return '';
  }
};
const allPids = (): number[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);

interface Snapshot {
  netns: string[];
  mounts: string[];
  cgroups: string[];
  hostPaths: string[];
  sysctls: string[];
}
const snapshot = (): Snapshot => ({
  netns: netnsNames(),
  mounts: mountPoints(),
  cgroups: cgroupTops(),
  hostPaths: HOST_PATHS.filter((p) => existsSync(p)),
  sysctls: SYSCTLS.map((s) => `${s}=${read(`/proc/sys/${s}`).trim()}`),
});

interface Pod {
  metadata: { name: string };
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string };
}

describe('hack/cluster.sh: up gives two working nodes, down leaves nothing behind', { timeout: 600_000 }, () => {
  const before0 = snapshot();
  /** Processes of the cluster seen while it was up: pid -> start time. */
  const procs = new Map<number, string>();
  const namespaces = new Set<string>();
  let upMs = 0;
  let downMs = 0;
  let wentDown = false;

  before(() => {
    assert.ok(!OUR_NETNS.some((n) => before0.netns.includes(n)), `a cluster is already up (netns ${before0.netns.join(' ')})`);
    const t = Date.now();
    clusterUp();
    upMs = Date.now() - t;
  });

  after(() => {
    if (!wentDown) clusterDown();
  });

  it('two nodes are Ready, each with its own pod CIDR inside the cluster CIDR', () => {
    const nodes = JSON.parse(kubectl(['get', 'nodes', '-o', 'json'])) as {
      items: Array<{
        metadata: { name: string };
        spec: { podCIDR?: string };
        status: { conditions: Array<{ type: string; status: string }>; addresses: Array<{ type: string; address: string }> };
      }>;
    };
    assert.deepEqual(nodes.items.map((n) => n.metadata.name).sort(), [...NODES]);
    for (const n of nodes.items) {
      assert.equal(n.status.conditions.find((c) => c.type === 'Ready')?.status, 'True', `${n.metadata.name} Ready`);
      assert.match(n.spec.podCIDR ?? '', /^198\.19\.\d+\.0\/24$/);
      assert.equal(n.status.addresses.find((a) => a.type === 'InternalIP')?.address, CLUSTER.nodes[n.metadata.name as NodeName]);
    }
    assert.notEqual(nodes.items[0]?.spec.podCIDR, nodes.items[1]?.spec.podCIDR);
    console.log(`# cluster up in ${(upMs / 1000).toFixed(1)} s`);
  });

  it('the scheduler places a pod on each node; each runs; pods are reachable across nodes', async () => {
    for (const node of NODES)
      kubectl(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: `probe-${node}`, namespace: 'default' },
          spec: {
            nodeSelector: { 'sipha.test/node': node },
            terminationGracePeriodSeconds: 1,
            containers: [{ name: 'pause', image: CLUSTER.pauseImage, imagePullPolicy: 'Never' }],
          },
        }),
      );
    const pods = (): Pod[] => (JSON.parse(kubectl(['get', 'pods', '-o', 'json'])) as { items: Pod[] }).items;
    await until(
      () => pods().filter((p) => p.status.phase === 'Running').length === 2,
      90_000,
      'both probe pods Running',
      () => kubectl(['get', 'pods', '-o', 'wide']),
    );
    const ps = pods();
    for (const node of NODES) {
      const p = ps.find((x) => x.metadata.name === `probe-${node}`);
      assert.equal(p?.spec.nodeName, node);
      assert.match(p?.status.podIP ?? '', /^198\.19\.\d+\.\d+$/);
    }
    // The other node's pod, through the routes between the nodes' pod CIDRs.
    const ipB = ps.find((x) => x.metadata.name === 'probe-node-b')?.status.podIP as string;
    const ipA = ps.find((x) => x.metadata.name === 'probe-node-a')?.status.podIP as string;
    // A TCP connect to a closed port: a refusal comes from the pod's own
    // kernel, so it proves the path; a timeout means no route.
    const probe = (ip: string) =>
      `const s = require('node:net').connect(9, '${ip}');
       s.setTimeout(3000, () => { console.log('timeout'); process.exit(0); });
       s.on('connect', () => { console.log('open'); process.exit(0); });
       s.on('error', (e) => { console.log(e.code); process.exit(0); });`;
    assert.equal(
      nodeExec('node-a', process.execPath, ['-e', probe(ipB)]).trim(),
      'ECONNREFUSED',
      `node-a -> pod ${ipB} on node-b`,
    );
    assert.equal(
      nodeExec('node-b', process.execPath, ['-e', probe(ipA)]).trim(),
      'ECONNREFUSED',
      `node-b -> pod ${ipA} on node-a`,
    );
  });

  it('cluster DNS answers through the kube-dns ClusterIP from both nodes (kube-proxy), and the API server reaches the kubelets', () => {
    for (const node of NODES) {
      const out = nodeExec(node, process.execPath, [
        '-e',
        `const r = new (require('node:dns').promises.Resolver)({ timeout: 2000, tries: 2 });
         r.setServers(['${CLUSTER.dnsIp}']);
         r.resolve4('kubernetes.default.svc.cluster.local').then((a) => console.log(a.join(',')));`,
      ]);
      assert.equal(out.trim(), CLUSTER.apiServiceIp, `DNS from ${node}`);
    }
    // Logs go API server -> kubelet (client certificate, webhook authorization).
    assert.match(kubectl(['-n', 'kube-system', 'logs', 'deploy/coredns']), /CoreDNS-/);
  });

  it('status lists every process running', () => {
    const st = clusterStatus();
    assert.equal(st.code, 0, st.err);
    assert.doesNotMatch(st.out, /NOT RUNNING/);
    for (const name of [
      'etcd',
      'kube-apiserver',
      'kube-scheduler',
      'kubelet-node-a',
      'kubelet-node-b',
      'containerd-node-b',
      'kube-proxy-node-a',
    ])
      assert.match(st.out, new RegExp(`^${name}: running`, 'm'));
  });

  it('node-crash kills every process of a node; node-boot brings it back with its pods', async () => {
    const dir = clusterDir();
    const kubelet = Number(read(join(dir, 'pids', 'kubelet-node-b')).split(' ')[0]);
    const inNode = () => cgroupHierarchies().flatMap((h) => cgroupPids(join(h, 'sipha-node-b')));
    assert.ok(inNode().length > 0, 'node-b runs containers');
    nodeCrash('node-b');
    assert.ok(!running(kubelet), 'the kubelet is gone');
    assert.deepEqual(inNode().filter(running), [], 'no container process is left on node-b');
    nodeBoot('node-b');
    await until(
      () => {
        const p = JSON.parse(kubectl(['get', 'pod', 'probe-node-b', '-o', 'json'])) as Pod & {
          status: { containerStatuses?: Array<{ restartCount: number; ready: boolean }> };
        };
        const c = p.status.containerStatuses?.[0];
        return p.status.phase === 'Running' && c !== undefined && c.ready && c.restartCount >= 1;
      },
      90_000,
      'probe-node-b running again after the reboot',
      () => kubectl(['get', 'pods', '-A', '-o', 'wide']),
    );
  });

  it('down ends every process and removes every netns, mount, cgroup and file it made', () => {
    // What the cluster consists of right now: recorded PIDs, shims and
    // container processes (in the nodes' cgroups), and their namespaces.
    const dir = clusterDir();
    for (const f of readdirSync(join(dir, 'pids'))) {
      const pid = Number(read(join(dir, 'pids', f)).split(' ')[0]);
      procs.set(pid, startTime(pid));
    }
    for (const h of cgroupHierarchies())
      for (const node of NODES) for (const pid of cgroupPids(join(h, `sipha-${node}`))) procs.set(pid, startTime(pid));
    for (const pid of allPids())
      if (read(`/proc/${pid}/cmdline`).includes(`${dir}/`) && !procs.has(pid)) procs.set(pid, startTime(pid));
    for (const [pid] of procs) {
      namespaces.add(nsInode(pid, 'net'));
      namespaces.add(nsInode(pid, 'mnt'));
    }
    namespaces.delete('');
    const hostNs = [nsInode(process.pid, 'net'), nsInode(process.pid, 'mnt')];
    for (const ns of hostNs) namespaces.delete(ns);
    const containers = [...procs.keys()].filter((p) => read(`/proc/${p}/comm`).trim() === 'pause').length;
    assert.ok(containers >= 3, `pause processes seen (2 probes + CoreDNS sandbox): ${containers}`);
    assert.ok(namespaces.size >= 5, `node and pod namespaces seen: ${namespaces.size}`);

    const t = Date.now();
    clusterDown();
    downMs = Date.now() - t;
    wentDown = true;
    console.log(`# cluster down in ${(downMs / 1000).toFixed(1)} s`);

    const alive = [...procs].filter(([pid, st]) => st !== '' && startTime(pid) === st && running(pid));
    assert.deepEqual(
      alive.map(([pid]) => `${pid} ${read(`/proc/${pid}/cmdline`).replaceAll('\0', ' ')}`),
      [],
      'no process of the cluster is left',
    );
    const inNs = allPids().filter(
      (pid) => running(pid) && (namespaces.has(nsInode(pid, 'net')) || namespaces.has(nsInode(pid, 'mnt'))),
    );
    assert.deepEqual(inNs, [], 'no process is left in a namespace of the cluster (node, pod)');

    const now = snapshot();
    assert.deepEqual(
      now.netns.filter((n) => !before0.netns.includes(n) && !/^sipha-[0-9a-f]{6}-/.test(n)),
      [],
      'no new network namespace',
    );
    assert.ok(!OUR_NETNS.some((n) => now.netns.includes(n)), 'the cluster netns are gone');
    assert.deepEqual(
      // other suites' scratch dirs under /tmp (image builds) are theirs
      now.mounts.filter((m) => !before0.mounts.includes(m) && (!m.startsWith('/tmp/') || m === dir || m.startsWith(`${dir}/`))),
      [],
      'no new mount',
    );
    assert.deepEqual(now.cgroups, before0.cgroups, 'the cgroup hierarchies are as before');
    for (const h of cgroupHierarchies())
      for (const node of NODES) assert.ok(!existsSync(join(h, `sipha-${node}`)), `${h}/sipha-${node} removed`);
    assert.deepEqual(now.hostPaths, before0.hostPaths, 'no runtime directory created on the host');
    assert.deepEqual(now.sysctls, before0.sysctls, "the machine's kernel settings are untouched");
    assert.ok(!existsSync(dir), `${dir} removed`);
    assert.equal(clusterStatus().code, 1, 'status says it is not up');
    clusterDown(); // a second down is harmless
  });
});
