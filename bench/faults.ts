/**
 * npm run bench -- faults   [--trials N] [--faults a,b,...] [--merge]
 *
 * Faults around the happy path (issue 8), each on a fresh netns bed with
 * real Kamailio, real sidecars and the UDP witness (hosts a, b, client, uas,
 * witness, pa, pb). Per trial: 1000 users register via the VIP; calls run at
 * 10/s (rolling_upgrade: 100/s) with 5 s hold; three OPTIONS probers run every 10 ms:
 *   - client: through the VIP as any client (ARP decides): the gap;
 *   - pa / pb: pinned to a's / b's MAC (a static neighbour entry for the
 *     VIP), so each tells whether that host serves SIP on the VIP right now,
 *     whatever the clients' ARP caches say.
 * and the VIP's presence on a and b is followed with `ip monitor address`.
 * Figures (keys `<fault>_<figure>`):
 *   gap_ms_p50 / gap_ms_max    fault -> first probe answered via the VIP after the outage it caused;
 *                              for the planned switchover and rolling upgrade (no fault instant of
 *                              their own): the interruption, first lost probe -> the next answer
 *   regs_lost                  of 1000, missing on the master at the end
 *   calls_failed               sipp's failed calls, summed over the trials
 *   two_master_ms              longest run of 10 ms slots in which both a and b answered probes (max over trials)
 *   no_master_ms               longest run after the fault in which neither did (max)
 *   stale_vip_ms               longest time the VIP stayed on a host that did not answer (max)
 *   probes_lost_after_takeover probes via the VIP lost after the first one answered after the fault (sum)
 * apiserver_down and operator_down run on the two-node cluster of
 * hack/cluster.sh (the pair as pods, the chart's operator, the example in arp
 * mode with its Lease witness): the control plane goes away, then the
 * master's Kamailio is killed (a failover while it is away), and comes back
 * after the window. The same probers and VIP watch, pinned to each node.
 * Run them under the cluster lock: flock /tmp/sipha-cluster.lock npm run bench -- faults ...
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as k from '../test/lib/cluster.ts';
import {
  applyExample,
  VIP as CLUSTER_VIP,
  clusterWithImages,
  injectFault,
  installOperator,
  isMaster,
  NS,
  podKamailio,
  podWithRole,
  settled,
} from '../test/lib/cluster-pair.ts';
import { dropInput, heal, partition, removeDrop } from '../test/lib/firewall.ts';
import { lookupAll } from '../test/lib/kamailio.ts';
import { Host, NetBed } from '../test/lib/netbed.ts';
import { PAIR_BED_HOSTS, type PairNode, role, roleStory, startPair, VIP, WITNESS_HOST } from '../test/lib/pair.ts';
import { outage, type ProbeLog, startProber } from '../test/lib/prober.ts';
import { until } from '../test/lib/procs.ts';
import { hangMainThread } from '../test/lib/sidecar.ts';
import { failedCallsReport, runSipp, startUas, users } from '../test/lib/sipp.ts';
import { median, round, table, writeFigures } from './lib/report.ts';

const FAULTS = [
  'kamailio_kill',
  'host_crash',
  'sidecar_kill',
  'hb_cut_both',
  'hb_cut_one_way',
  'partition_heal',
  'stream_stall',
  'backup_kamailio_restart',
  'peer_new_address',
  'apiserver_down',
  'operator_down',
  'main_thread_hung',
  'switchover',
  'rolling_upgrade',
  'double_failure',
] as const;
type Fault = (typeof FAULTS)[number];
type ClusterFault = 'apiserver_down' | 'operator_down';
const NEEDS_CLUSTER: readonly Fault[] = ['apiserver_down', 'operator_down'];
const PLANNED: readonly Fault[] = ['switchover', 'rolling_upgrade'];
const onBed = (f: Fault): f is Exclude<Fault, ClusterFault> => !NEEDS_CLUSTER.includes(f);

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '5' },
    faults: { type: 'string', default: FAULTS.join(',') },
    merge: { type: 'boolean', default: false },
  },
});
const TRIALS = Number(values.trials);
const USERS = users('flt', 1000);
const CALL_RATE = 10;
const HOLD_MS = 5000;
const PROBE_MS = 10;
const target = `${VIP}:5060`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => process.hrtime.bigint();

interface Trial {
  gapMs: number | null;
  regsLost: number;
  callsFailed: number;
  twoMasterMs: number;
  noMasterMs: number;
  staleVipMs: number;
  probesLost: number;
}

interface Bed {
  bed: NetBed;
  a: PairNode;
  b: PairNode;
  client: Host;
  uas: Host;
  hostsFile: string;
  /** What sidecars replaced during the trial said (role changes, warnings): printed when calls failed. */
  said: string[];
}

/** Everything a fault needs; `inject` returns the fault's instant, after which the window keeps running. */
interface Scenario {
  /** Before the calls and probers start (e.g. an earlier fault the pair recovers from). */
  prepare?: (x: Bed) => Promise<void>;
  inject: (x: Bed) => Promise<bigint>;
  /** How long the calls and probers run after the fault. */
  afterMs?: number;
  /** Calls per second during the trial (default CALL_RATE). */
  callRate?: number;
  nodeArgs?: string[];
}

const crashHost = async (bed: NetBed, n: PairNode) => {
  n.host.run('ip', ['link', 'set', 'eth0', 'down']);
  const at = now();
  await Promise.all([bed.stop(n.kamailio.child, 'SIGKILL'), bed.stop(n.sidecar.child, 'SIGKILL')]);
  return at;
};
const post = (n: PairNode) => n.host.run('curl', ['-s', '-m', '10', '-X', 'POST', 'http://127.0.0.1:9090/switchover']);
const inSync = (n: PairNode) => n.sidecar.metric('sipha_in_sync') === 1;
/** A fault held for `ms`, then removed (the pair must recover by itself). */
const held = async (ms: number, on: () => void, off: () => void) => {
  on();
  const at = now();
  setTimeout(off, ms);
  return at;
};

const SCENARIOS: Record<Exclude<Fault, ClusterFault>, Scenario> = {
  kamailio_kill: {
    inject: async ({ bed, a }) => {
      const at = now();
      await bed.stop(a.kamailio.child, 'SIGKILL');
      return at;
    },
  },
  host_crash: { inject: async ({ bed, a }) => crashHost(bed, a) },
  sidecar_kill: {
    // An OOM kill; the kubelet restarts the container a second later.
    inject: async (x) => {
      const at = now();
      await x.bed.stop(x.a.sidecar.child, 'SIGKILL');
      setTimeout(() => {
        void x.a.restartSidecar().then((n) => {
          x.a = n;
        });
      }, 1000);
      return at;
    },
  },
  hb_cut_both: {
    inject: async ({ a, b }) =>
      held(
        3000,
        () => {
          dropInput(a.host, 'hbcut', 'udp dport 5062');
          dropInput(b.host, 'hbcut', 'udp dport 5062');
        },
        () => {
          removeDrop(a.host, 'hbcut');
          removeDrop(b.host, 'hbcut');
        },
      ),
  },
  hb_cut_one_way: {
    // The master's beats no longer reach the backup; the backup's still reach the master.
    inject: async ({ b }) =>
      held(
        3000,
        () => dropInput(b.host, 'hbcut', 'udp dport 5062'),
        () => removeDrop(b.host, 'hbcut'),
      ),
  },
  partition_heal: {
    inject: async ({ a, b }) =>
      held(
        3000,
        () => partition(a.host, b.host),
        () => heal(a.host, b.host),
      ),
  },
  stream_stall: {
    inject: async ({ b }) =>
      held(
        3000,
        () => dropInput(b.host, 'stall', 'tcp dport 5063'),
        () => removeDrop(b.host, 'stall'),
      ),
  },
  backup_kamailio_restart: {
    prepare: async (x) => {
      await x.bed.stop(x.b.kamailio.child, 'SIGKILL');
      x.b = await x.b.restartKamailio();
      await until(() => inSync(x.a) && inSync(x.b), 15000, 'the restarted backup server is resynced');
    },
    inject: async ({ bed, a }) => crashHost(bed, a),
  },
  peer_new_address: {
    // b's pod is recreated elsewhere: same name (a resolves it), new address.
    prepare: async (x) => {
      await Promise.all([x.bed.stop(x.b.kamailio.child, 'SIGKILL'), x.bed.stop(x.b.sidecar.child, 'SIGKILL')]);
      x.b.host.run('ip', ['addr', 'del', '198.18.0.2/24', 'dev', 'eth0']);
      x.b.host.run('ip', ['addr', 'add', '198.18.0.3/24', 'dev', 'eth0']);
      writeFileSync(x.hostsFile, '127.0.0.1 localhost\n198.18.0.3 peer-b.sipha.test\n');
      x.b = await x.b.restart({ SIPHA_NODE_ADDRESS: '198.18.0.3' });
      await until(() => role(x.b) === 'backup' && inSync(x.a), 15000, 'b rejoined from its new address').catch((err) => {
        console.log('DEBUG', role(x.a), role(x.b), inSync(x.a), inSync(x.b), roleStory(x.a, x.b));
        throw err;
      });
    },
    inject: async ({ bed, a }) => crashHost(bed, a),
  },
  main_thread_hung: {
    nodeArgs: ['--inspect=127.0.0.1:9229'],
    inject: async ({ a }) => {
      const at = now();
      hangMainThread(a.host, 4000);
      return at;
    },
  },
  switchover: {
    inject: async ({ a }) => {
      const at = now();
      const r = post(a);
      if (!r.startsWith('switched over')) throw new Error(`switchover refused: ${r}`);
      return at;
    },
  },
  rolling_upgrade: {
    // New image on both: the backup first, in sync, one switchover, then the old master;
    // at 100 calls/s, as issue 8 asks of an upgrade.
    afterMs: 16000,
    callRate: 100,
    inject: async (x) => {
      await x.bed.stop(x.b.sidecar.child, 'SIGTERM');
      await x.bed.stop(x.b.kamailio.child, 'SIGTERM');
      x.said.push(`before its upgrade: ${roleStory(x.b)}`);
      x.b = await x.b.restart();
      await until(() => role(x.b) === 'backup' && inSync(x.b), 15000, 'upgraded backup in sync');
      const at = now();
      const r = post(x.a);
      if (!r.startsWith('switched over')) throw new Error(`switchover refused: ${r}`);
      await until(() => role(x.a) === 'backup' && inSync(x.a), 15000, 'old master is an in-sync backup');
      await x.bed.stop(x.a.sidecar.child, 'SIGTERM');
      await x.bed.stop(x.a.kamailio.child, 'SIGTERM');
      x.said.push(`before its upgrade: ${roleStory(x.a)}`);
      x.a = await x.a.restart();
      await until(() => role(x.a) === 'backup' && inSync(x.a), 15000, 'upgraded old master in sync').catch((err) => {
        console.log('DEBUG', role(x.a), role(x.b), inSync(x.a), inSync(x.b), roleStory(x.a, x.b));
        throw err;
      });
      return at;
    },
  },
  double_failure: {
    // The master dies, the backup takes over, the old master returns and resyncs; then the new master dies.
    prepare: async (x) => {
      await crashHost(x.bed, x.a);
      await until(() => role(x.b) === 'master', 5000, 'b took over');
      x.a.host.run('ip', ['link', 'set', 'eth0', 'up']);
      x.a = await x.a.restart();
      await until(() => role(x.a) === 'backup' && inSync(x.a), 15000, 'a rejoined in sync');
    },
    inject: async ({ bed, b }) => crashHost(bed, b),
  },
};

/** A prober pinned to one host: a permanent neighbour entry sends the VIP to that host's MAC. */
function pin(prober: Host, to: Host, vip: string): void {
  const mac = to.run('cat', ['/sys/class/net/eth0/address']).trim();
  prober.run('ip', ['neigh', 'replace', vip, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent']);
}

/**
 * Whether `host` has the VIP, as a timeline (monotonic ns, present): its
 * state now, then every change as `ip monitor` reports it (no polling, so
 * the measurement adds no load of its own to the takeover it measures).
 */
function watchVip(host: Host, vip: string): { stop: () => Promise<Array<[bigint, boolean]>> } {
  const samples: Array<[bigint, boolean]> = [
    [now(), host.run('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']).includes(` ${vip}/32`)],
  ];
  const mon = host.spawn('ip', ['-o', 'monitor', 'address', 'dev', 'eth0']);
  let buf = '';
  mon.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.includes(` ${vip}/32`)) samples.push([now(), !line.startsWith('Deleted')]);
      nl = buf.indexOf('\n');
    }
  });
  return {
    stop: async () => {
      mon.kill();
      return samples;
    },
  };
}

/** For each 10 ms slot from `from`: did a probe sent in it get an answer? */
function answeredSlots(log: ProbeLog, from: bigint, slots: number): boolean[] {
  const out = new Array<boolean>(slots).fill(false);
  for (let i = 0; i < log.sentNs.length; i++) {
    const k = Number((BigInt(log.sentNs[i] as string) - from) / BigInt(PROBE_MS * 1e6));
    if (k >= 0 && k < slots && log.answeredNs[i]) out[k] = true;
  }
  return out;
}

/** Whether the VIP was on the host in each slot (the latest poll at or before it). */
function vipSlots(samples: Array<[bigint, boolean]>, from: bigint, slots: number): boolean[] {
  const out = new Array<boolean>(slots).fill(false);
  let j = 0;
  let present = false;
  for (let k = 0; k < slots; k++) {
    const t = from + BigInt(k * PROBE_MS * 1e6);
    while (j < samples.length && (samples[j] as [bigint, boolean])[0] <= t) present = (samples[j++] as [bigint, boolean])[1];
    out[k] = present;
  }
  return out;
}

const longestRun = (xs: boolean[]) => {
  let best = 0;
  let run = 0;
  for (const x of xs) {
    run = x ? run + 1 : 0;
    best = Math.max(best, run);
  }
  return best * PROBE_MS;
};

interface WindowSpec {
  bed: NetBed;
  client: Host;
  uas: Host;
  /** Probers pinned to each node's MAC (a permanent neighbour entry for the VIP). */
  pinned: [Host, Host];
  /** The two nodes (their eth0 carries the VIP). */
  nodes: [Host, Host];
  vip: string;
  afterMs: number;
  rate: number;
  /** A planned handover: the gap is the interruption clients saw. */
  planned: boolean;
  inject: () => Promise<bigint>;
}

/**
 * One measured window around a fault, on whatever pair stands behind `vip`
 * (the netns bed's processes or the cluster's pods): calls to the registered
 * "uas", three probers (via the VIP, pinned to each node) and the VIP on each
 * node, 4 s before the fault and `afterMs` after it.
 */
async function faultWindow(w: WindowSpec): Promise<Omit<Trial, 'regsLost'>> {
  const { bed } = w;
  const target = `${w.vip}:5060`;
  await runSipp(bed, w.uas, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
  const uas = startUas(w.uas);
  const windowMs = 4000 + w.afterMs;
  const calls = Math.round((w.rate * (windowMs - HOLD_MS)) / 1000);
  const callRun = runSipp(bed, w.client, {
    scenario: 'uac-call.xml',
    target,
    calls,
    rate: w.rate,
    limit: Math.max(200, Math.ceil(w.rate * (HOLD_MS / 1000 + 2) * 2)),
    service: 'uas',
    holdMs: HOLD_MS,
    timeoutS: Math.ceil(windowMs / 1000) + 60,
  });
  pin(w.pinned[0], w.nodes[0], w.vip);
  pin(w.pinned[1], w.nodes[1], w.vip);
  const start = now();
  const viaVip = startProber(bed, w.client, w.vip, PROBE_MS, windowMs);
  const onA = startProber(bed, w.pinned[0], w.vip, PROBE_MS, windowMs);
  const onB = startProber(bed, w.pinned[1], w.vip, PROBE_MS, windowMs);
  // If the trial fails, the probers end with the bed: their logs are then moot, not a second error.
  for (const p of [viaVip, onA, onB]) p.done.catch(() => {});
  const vipA = watchVip(w.nodes[0], w.vip);
  const vipB = watchVip(w.nodes[1], w.vip);
  await sleep(4000);
  const faultNs = await w.inject();
  const [logVip, logA, logB] = await Promise.all([viaVip.done, onA.done, onB.done]);
  const [samplesA, samplesB] = await Promise.all([vipA.stop(), vipB.stop()]);
  const r = await callRun;
  await bed.stop(uas.child);

  // Only the slots all three probers covered (each starts a node process, and ends on its own),
  // less the last 300 ms, whose answers may still have been due.
  const slotOf = (ns: string) => Number((BigInt(ns) - start) / BigInt(PROBE_MS * 1e6));
  const logs = [logVip, logA, logB];
  const firstSlot = Math.max(...logs.map((l) => slotOf(l.sentNs[0] as string)));
  const slots = Math.min(...logs.map((l) => slotOf(l.sentNs[l.sentNs.length - 1] as string))) - Math.ceil(300 / PROBE_MS);
  const ansA = answeredSlots(logA, start, slots);
  const ansB = answeredSlots(logB, start, slots);
  const faultSlot = Math.max(0, Number((faultNs - start) / BigInt(PROBE_MS * 1e6)));
  const covered = (i: number) => i >= firstSlot;
  const both = ansA.map((v, i) => covered(i) && v && (ansB[i] as boolean));
  const neither = ansA.map((v, i) => i >= faultSlot && !v && !(ansB[i] as boolean));
  const staleA = vipSlots(samplesA, start, slots).map((v, i) => covered(i) && v && !ansA[i]);
  const staleB = vipSlots(samplesB, start, slots).map((v, i) => covered(i) && v && !ansB[i]);
  const o = outage(logVip, faultNs, Math.ceil(300 / PROBE_MS));
  // Failed calls say where they stopped (sipp's screen and error log), so a run that failed some is read, not guessed.
  if (r.failed + (calls - r.successful - r.failed) > 0) console.log(failedCallsReport(r));
  return {
    // A planned handover has no fault instant of its own (the command is sent by a process that
    // takes its time to start): its gap is the interruption clients saw, first lost probe -> next answer.
    gapMs: w.planned ? o.interruptionMs : o.gapMs,
    callsFailed: r.failed + (calls - r.successful - r.failed),
    twoMasterMs: longestRun(both),
    noMasterMs: longestRun(neither),
    staleVipMs: Math.max(longestRun(staleA), longestRun(staleB)),
    probesLost: o.lostAfter,
  };
}

async function trial(fault: Exclude<Fault, ClusterFault>): Promise<Trial> {
  const sc = SCENARIOS[fault];
  const bed = NetBed.create([...PAIR_BED_HOSTS, WITNESS_HOST, { name: 'pa', octet: 11 }, { name: 'pb', octet: 12 }]);
  const etc = `/etc/netns/${bed.host('a').ns}`;
  try {
    // a knows its peer by name (as a pod knows <pair>-1.<peers Service>); /etc/netns/<ns>/hosts is its /etc/hosts.
    mkdirSync(etc, { recursive: true });
    const hostsFile = `${etc}/hosts`;
    writeFileSync(hostsFile, '127.0.0.1 localhost\n198.18.0.2 peer-b.sipha.test\n');
    const [a, b] = await startPair(
      bed,
      bed.host('a'),
      bed.host('b'),
      { SIPHA_LOG_LEVEL: 'warn' },
      {
        witness: true,
        envFor: (o): Record<string, string> => (o === 0 ? { SIPHA_PEER_ADDRESS: 'peer-b.sipha.test' } : {}),
        ...(sc.nodeArgs ? { nodeArgs: sc.nodeArgs } : {}),
      },
    );
    const x: Bed = { bed, a, b, client: bed.host('client'), uas: bed.host('uas'), hostsFile, said: [] };
    const reg = await runSipp(bed, x.client, {
      scenario: 'register.xml',
      target,
      calls: 1000,
      rate: 500,
      users: USERS,
      timeoutS: 30,
    });
    if (reg.successful !== 1000) throw new Error(`only ${reg.successful} of 1000 registered`);
    await sc.prepare?.(x);
    const w = await faultWindow({
      bed,
      client: x.client,
      uas: x.uas,
      pinned: [bed.host('pa'), bed.host('pb')],
      nodes: [x.a.host, x.b.host],
      vip: VIP,
      afterMs: sc.afterMs ?? 8000,
      rate: sc.callRate ?? CALL_RATE,
      planned: PLANNED.includes(fault),
      inject: () => {
        // The fault must hit the master: a trial where roles moved before it measures nothing.
        const target = fault === 'double_failure' ? x.b : x.a;
        if (!PLANNED.includes(fault) && role(target) !== 'master')
          console.log(`WARNING ${fault}: ${target.host.name} is ${role(target)} at the fault (a ${role(x.a)}, b ${role(x.b)})`);
        return sc.inject(x);
      },
    });
    if (w.callsFailed > 0)
      console.log(`what the sidecars said:\n${[...x.said, `at the end: ${roleStory(x.a, x.b)}`].join('\n')}`);
    await until(() => role(x.a) === 'master' || role(x.b) === 'master', 10000, 'a master at the end').catch(() => {});
    const master = role(x.a) === 'master' ? x.a : x.b;
    return { ...w, regsLost: 1000 - lookupAll(master.kamailio, USERS).size };
  } finally {
    await bed.destroy();
    rmSync(etc, { recursive: true, force: true });
  }
}

/** The cluster with the pair (as pods), SIP clients and pinned probers on its bridge, 1000 users registered. */
interface ClusterBed {
  bed: NetBed;
  nodes: Record<k.NodeName, Host>;
}

function clusterBed(): ClusterBed {
  clusterWithImages();
  const bed = NetBed.attach(k.CLUSTER.switchNs, k.CLUSTER.subnet, [
    { name: 'client', octet: 201 },
    { name: 'uas', octet: 202 },
    { name: 'pa', octet: 203 },
    { name: 'pb', octet: 204 },
  ]);
  // The nodes' own netns (hostNetwork pods: the VIP lands on their eth0), to pin probers to and watch.
  const nodes = Object.fromEntries(k.NODES.map((n) => [n, new Host(bed, n, k.nodeNs(n), k.CLUSTER.nodes[n])])) as Record<
    k.NodeName,
    Host
  >;
  // A node that does not hold the VIP forwards what comes to it (Kubernetes nodes route): a prober
  // pinned to it would be answered by the other node. Pinned probes are not forwarded.
  const probers = ['pa', 'pb'].map((n) => bed.host(n).ip).join(', ');
  for (const node of Object.values(nodes))
    node.run(
      'nft',
      ['-f', '-'],
      `table inet sipha_bench_pinned {\n chain pinned_probes {\n  type filter hook forward priority 0;\n  ip saddr { ${probers} } ip daddr ${CLUSTER_VIP} drop\n }\n}\n`,
    );
  return { bed, nodes };
}

const scaleOperator = (replicas: number) =>
  void k.kubectl([
    '-n',
    'sipha-system',
    'scale',
    'deployment',
    '-l',
    'app.kubernetes.io/name=sipha-operator',
    `--replicas=${replicas}`,
  ]);

const CLUSTER_FAULTS: Record<ClusterFault, { down: () => void; up: () => void }> = {
  // The API server (and with it the Lease witness, role reports and fences) gone during a failover.
  apiserver_down: { down: () => k.apiserverStop(), up: () => k.apiserverStart() },
  // The operator scaled to nothing during a failover: nobody reconciles, reports or fences.
  operator_down: { down: () => scaleOperator(0), up: () => scaleOperator(1) },
};

async function clusterTrial(cb: ClusterBed, fault: ClusterFault): Promise<Trial> {
  await until(settled, 180_000, 'a settled pair');
  const master = podWithRole('master');
  const backup = podWithRole('backup');
  if (!master || !backup) throw new Error('no master and backup');
  const order = [master.node, backup.node] as [k.NodeName, k.NodeName];
  const f = CLUSTER_FAULTS[fault];
  let downed = false;
  try {
    const w = await faultWindow({
      bed: cb.bed,
      client: cb.bed.host('client'),
      uas: cb.bed.host('uas'),
      pinned: [cb.bed.host('pa'), cb.bed.host('pb')],
      nodes: [cb.nodes[order[0]], cb.nodes[order[1]]],
      vip: CLUSTER_VIP,
      afterMs: 8000,
      rate: CALL_RATE,
      planned: false,
      inject: async () => {
        f.down();
        downed = true;
        await sleep(1000);
        const at = now();
        injectFault('kamailio-kill', master); // from the host, by the pod's cgroup: no API call
        return at;
      },
    });
    f.up();
    downed = false;
    await until(
      () => isMaster(backup.name),
      60_000,
      'the backup is master',
      // What each side said: its role, its reports to the API server (which was away).
      () =>
        [master.name, backup.name]
          .map((pod) => {
            const r = k.kubectlTry(['-n', NS, 'logs', pod, '-c', 'sipha-sidecar', '--since=120s', '--request-timeout=20s']);
            return `--- ${pod}\n${(r.code === 0 ? r.out : r.err).split('\n').slice(-40).join('\n')}`;
          })
          .join('\n'),
    );
    return { ...w, regsLost: 1000 - lookupAll(podKamailio(backup.name), USERS).size };
  } finally {
    if (downed) f.up();
  }
}

async function clusterFaults(faults: ClusterFault[]): Promise<Map<ClusterFault, Trial[]>> {
  const out = new Map<ClusterFault, Trial[]>();
  if (faults.length === 0) return out;
  let cb: ClusterBed | null = null;
  try {
    cb = clusterBed();
    installOperator();
    applyExample();
    await until(settled, 180_000, 'the pair is Ready');
    const reg = await runSipp(cb.bed, cb.bed.host('client'), {
      scenario: 'register.xml',
      target: `${CLUSTER_VIP}:5060`,
      calls: 1000,
      rate: 250,
      users: USERS,
    });
    if (reg.successful !== 1000) throw new Error(`cluster: ${reg.successful} of 1000 registered`);
    for (const fault of faults) {
      const ts: Trial[] = [];
      for (let i = 1; i <= TRIALS; i++) ts.push(report(fault, i, await clusterTrial(cb, fault)));
      out.set(fault, ts);
    }
  } finally {
    await cb?.bed.destroy();
    k.clusterDown();
  }
  return out;
}

const report = (fault: Fault, i: number, t: Trial): Trial => {
  console.log(
    `${fault} ${i}/${TRIALS}: gap ${t.gapMs ?? 'never'} ms, regs lost ${t.regsLost}, calls failed ${t.callsFailed}, ` +
      `two masters ${t.twoMasterMs} ms, no master ${t.noMasterMs} ms, stale VIP ${t.staleVipMs} ms, probes lost ${t.probesLost}`,
  );
  return t;
};

const figures: Record<string, number | string | null> = {};
const rows: Array<Array<string | number>> = [];
const asked = (values.faults as string).split(',') as Fault[];
for (const fault of asked) if (!FAULTS.includes(fault)) throw new Error(`unknown fault ${fault}; one of ${FAULTS.join(', ')}`);
// The cluster's faults first, in one cluster (it takes a minute to bring up).
const onCluster = await clusterFaults(asked.filter((f): f is ClusterFault => !onBed(f)));
for (const fault of asked) {
  let ts = onCluster.get(fault as ClusterFault);
  if (ts === undefined) {
    ts = [];
    for (let i = 1; i <= TRIALS; i++) ts.push(report(fault, i, await trial(fault as Exclude<Fault, ClusterFault>)));
  }
  const gaps = ts.map((t) => t.gapMs).filter((g): g is number => g !== null);
  const max = (f: (t: Trial) => number) => Math.max(...ts.map(f));
  const sum = (f: (t: Trial) => number) => ts.reduce((n, t) => n + f(t), 0);
  const f: Record<string, number | null> = {
    gap_ms_p50: gaps.length ? round(median(gaps), 1) : null,
    gap_ms_max: gaps.length === ts.length ? Math.max(...gaps) : null,
    regs_lost: max((t) => t.regsLost),
    calls_failed: sum((t) => t.callsFailed),
    two_master_ms: max((t) => t.twoMasterMs),
    no_master_ms: max((t) => t.noMasterMs),
    stale_vip_ms: max((t) => t.staleVipMs),
    probes_lost_after_takeover: sum((t) => t.probesLost),
  };
  for (const [k, v] of Object.entries(f)) figures[`${fault}_${k}`] = v;
  rows.push([
    fault,
    f.gap_ms_p50 ?? 'never',
    f.gap_ms_max ?? 'never',
    f.regs_lost as number,
    f.calls_failed as number,
    f.two_master_ms as number,
    f.no_master_ms as number,
    f.stale_vip_ms as number,
    f.probes_lost_after_takeover as number,
    onBed(fault) ? 'netns bed' : 'pods on the cluster',
  ]);
}
table(
  `faults: ${TRIALS} trials each; 1000 users, calls at ${CALL_RATE}/s (${HOLD_MS} ms hold), probers every ${PROBE_MS} ms (via the VIP, and pinned to a and b); netns bed: UDP witness; cluster: the pair as pods, Lease witness`,
  [
    'fault',
    'gap p50',
    'gap max',
    'regs lost',
    'calls failed',
    'two masters ms',
    'no master ms',
    'stale VIP ms',
    'probes lost',
    'note',
  ],
  rows,
);
const previous = values.merge
  ? (JSON.parse(readFileSync(fileURLToPath(new URL('./out/faults.json', import.meta.url)), 'utf8')) as Record<string, unknown>)
  : {};
// Notes an older run left ("not measured") go once the fault is measured.
for (const fault of asked) delete previous[`${fault}_not_measured`];
writeFigures('faults', {
  ...previous,
  ...figures,
  trials: TRIALS,
  calls_per_trial_rate: CALL_RATE,
  witness:
    'netns bed: udp arbiter on a third host; apiserver_down, operator_down: pods on hack/cluster.sh with the Lease witness',
});
