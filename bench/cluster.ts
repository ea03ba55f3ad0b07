/**
 * npm run bench -- cluster   [--trials N] [--faults kamailio-kill,pod-delete,node-crash] [--skip-metallb] [--merge]
 *
 * The pair as pods (issue 10): the two-node cluster of hack/cluster.sh, the
 * chart's operator, examples/siphapair.yaml in arp mode, 1000 registered
 * users, calls in progress at every fault. Per fault and trial, from a
 * settled pair: the gap (fault -> the first OPTIONS answered through the VIP
 * after the outage, 5 ms prober, test/lib/prober.ts `outage`), registrations
 * lost (of 1000, on the new master's Kamailio), calls failed (sipp's own
 * counters). Baseline in the same run: the netns bed pair's host down.
 *
 * Then, on the same cluster in the same run, the pair in `metallb` mode behind
 * a real MetalLB (L2, hack/build-metallb.sh): the master pod deleted, 5
 * trials, with where the time went (test/lib/lb-timeline.ts: role label seen
 * by the API server, the Service's EndpointSlice, MetalLB's ARP on the wire).
 *
 * Keys (bench/out/cluster.json): cluster_kamailio_kill_gap_ms_p50,
 * cluster_node_down_gap_ms_p50, cluster_node_down_gap_ms_max,
 * cluster_pod_delete_gap_ms_p50, cluster_regs_lost, cluster_calls_failed,
 * metallb_pod_down_gap_ms_p50, metallb_pod_down_gap_ms_max,
 * metallb_regs_lost, metallb_calls_failed, metallb_takeover_ms_p50, metallb_label_ms_p50,
 * metallb_endpoints_ms_p50, metallb_proxy_sync_ms_p50, metallb_garp_ms_p50, bed_host_down_gap_ms_p50,
 * cluster_apply_to_ready_s, operator_image_mb, sidecar_image_mb; and where an
 * arp-mode failover spent its time, from the sidecars' own logs (ms after the
 * fault, p50): cluster_<fault>_{server_down,resigned,takeover,serving}_ms_p50,
 * and cluster_<fault>_throttled_ms_max (CFS throttling of the two pods'
 * containers during a trial: a CPU limit at work).
 *
 * --faults runs only those arp-mode faults; --skip-metallb leaves the metallb
 * part out; --merge keeps the keys of bench/out/cluster.json this run does not
 * measure (a partial re-run).
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { parseArgs } from 'node:util';
import * as k from '../test/lib/cluster.ts';
import {
  applyExample,
  clusterWithImages,
  installOperator,
  isMaster,
  kubectl,
  NS,
  type PodFault,
  podKamailio,
  pods,
  podWithRole,
  prepareFault,
  settled,
  sipClients,
  VIP,
  vipHolders,
} from '../test/lib/cluster-pair.ts';
import { lookupAll } from '../test/lib/kamailio.ts';
import { type LbTimeline, LbTimelineRecorder } from '../test/lib/lb-timeline.ts';
import { buildMetallb, ingressIps, installMetallb, nodeMacs } from '../test/lib/metallb.ts';
import { type Host, NetBed } from '../test/lib/netbed.ts';
import { VIP as BED_VIP, PAIR_BED_HOSTS, startPair } from '../test/lib/pair.ts';
import { outage, startProber } from '../test/lib/prober.ts';
import { until } from '../test/lib/procs.ts';
import { failedCallsReport, runSipp, startUas, users } from '../test/lib/sipp.ts';
import { podThrottle, type TakeoverSteps, takeoverSteps, throttledMsBetween } from '../test/lib/takeover-steps.ts';
import { median, round, table, writeFigures } from './lib/report.ts';

const { values } = parseArgs({
  options: {
    trials: { type: 'string', default: '5' },
    faults: { type: 'string', default: 'kamailio-kill,pod-delete,node-crash' },
    'skip-metallb': { type: 'boolean', default: false },
    merge: { type: 'boolean', default: false },
  },
});
const TRIALS = Number(values.trials);
const ARP_FAULTS = [
  ['kamailio-kill', 'cluster_kamailio_kill'],
  ['pod-delete', 'cluster_pod_delete'],
  ['node-crash', 'cluster_node_down'],
] as const;
const asked = values.faults.split(',');
for (const f of asked)
  if (!ARP_FAULTS.some(([name]) => name === f)) throw new Error(`--faults: ${f} is not one of ${ARP_FAULTS.map(([n]) => n)}`);
const USERS = users('bench', 1000);
const CALLS = 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Trial {
  gapMs: number | null;
  regsLost: number;
  callsFailed: number;
  /** metallb mode: when each step of the failover was seen, ms after the fault. */
  timeline?: LbTimeline;
  /** arp mode: the steps as the sidecars logged them, ms after the fault. */
  steps?: TakeoverSteps;
  /** CFS throttling of both pods' containers during the trial (ms), null if not read. */
  throttledMs?: number | null;
}

const LB_SERVICE = 'sip-edge-vip';
/** Ends the run before the metallb part (--skip-metallb). */
class SkipMetallb extends Error {}

/** Calls in progress across the fault: 20 at 10/s, each held 2 s, to the registered "uas". */
async function callsAcross(bed: NetBed, caller: Host, uasHost: Host, target: string, fault: () => Promise<bigint>) {
  await runSipp(bed, uasHost, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
  const uas = startUas(uasHost);
  const prober = startProber(bed, caller, target.split(':')[0] as string, 5, 8000);
  const calls = runSipp(bed, caller, {
    scenario: 'uac-call.xml',
    target,
    calls: CALLS,
    rate: 10,
    limit: CALLS,
    service: 'uas',
    holdMs: 2000,
    timeoutS: 40,
    localPort: 5080,
  });
  await sleep(1500);
  const faultNs = await fault();
  const o = outage(await prober.done, faultNs, 10);
  const r = await calls;
  await bed.stop(uas.child);
  const callsFailed = r.failed + (CALLS - r.successful - r.failed);
  if (callsFailed > 0) console.log(failedCallsReport(r));
  return { gapMs: o.gapMs, callsFailed };
}

async function bedHostDown(): Promise<Trial> {
  const bed = NetBed.create(PAIR_BED_HOSTS);
  try {
    const [a, b] = await startPair(bed, bed.host('a'), bed.host('b'), { SIPHA_LOG_LEVEL: 'warn' });
    const target = `${BED_VIP}:5060`;
    const reg = await runSipp(bed, bed.host('client'), {
      scenario: 'register.xml',
      target,
      calls: 1000,
      rate: 500,
      users: USERS,
    });
    if (reg.successful !== 1000) throw new Error(`bed: ${reg.successful} of 1000 registered`);
    const t = await callsAcross(bed, bed.host('client'), bed.host('uas'), target, async () => {
      a.host.run('ip', ['link', 'set', 'eth0', 'down']);
      const ns = process.hrtime.bigint();
      await Promise.all([bed.stop(a.sidecar.child, 'SIGKILL'), bed.stop(a.kamailio.child, 'SIGKILL')]);
      return ns;
    });
    return { ...t, regsLost: 1000 - lookupAll(b.kamailio, USERS).size };
  } finally {
    await bed.destroy();
  }
}

async function clusterTrial(client: NetBed, fault: PodFault, opts: { lbTimeline?: boolean } = {}): Promise<Trial> {
  await until(settled, 180_000, 'a settled pair');
  const master = podWithRole('master');
  const backup = podWithRole('backup');
  if (!master || !backup) throw new Error('no master and backup');
  const recorder = opts.lbTimeline ? new LbTimelineRecorder(NS, LB_SERVICE, VIP) : null;
  await recorder?.ready();
  let faultAt = 0;
  const fire = prepareFault(fault, master);
  // Only for the Kamailio kill: the other faults end the old pod's cgroups.
  const throttled = () => {
    if (fault !== 'kamailio-kill') return null;
    const m = podThrottle(master);
    const b = podThrottle(backup);
    return m !== null && b !== null ? new Map([...m, ...b]) : null;
  };
  let throttledBefore: Map<string, number> | null = null;
  const t = await callsAcross(client, client.host('client'), client.host('uas'), `${VIP}:5060`, async () => {
    throttledBefore = throttled();
    const ns = process.hrtime.bigint();
    faultAt = Date.now();
    fire();
    return ns;
  });
  const throttledAfter = throttled();
  await until(
    () => isMaster(backup.name),
    20_000,
    `the backup is master after ${fault}`,
    () => `${JSON.stringify(pods())}\n${kubectl('-n', NS, 'get', 'events', '--sort-by=.lastTimestamp')}`,
  );
  const regsLost = 1000 - lookupAll(podKamailio(backup.name), USERS).size;
  const timeline = recorder?.stop(faultAt, {
    pod: backup.name,
    ip: kubectl('-n', NS, 'get', 'pod', backup.name, '-o', 'jsonpath={.status.podIP}').trim(),
    mac: Object.entries(nodeMacs()).find(([, n]) => n === backup.node)?.[0] as string,
    node: backup.node,
    roleSince: kubectl(
      '-n',
      NS,
      'get',
      'pod',
      backup.name,
      '-o',
      'jsonpath={.metadata.annotations.sipha\\.io/role-since}',
    ).trim(),
  });
  const steps = opts.lbTimeline ? undefined : takeoverSteps(master.name, backup.name, faultAt);
  if (fault === 'node-crash') k.nodeBoot(master.node as k.NodeName);
  return {
    ...t,
    regsLost,
    ...(timeline ? { timeline } : {}),
    ...(steps ? { steps } : {}),
    throttledMs:
      throttledBefore !== null && throttledAfter !== null ? round(throttledMsBetween(throttledBefore, throttledAfter), 1) : null,
  };
}

const rows: Array<Array<string | number>> = [];
const figures: Record<string, number | null | string> = {};
const summarise = (name: string, ts: Trial[]) => {
  const gaps = ts.map((t) => t.gapMs).filter((g): g is number => g !== null);
  const lost = ts.reduce((n, t) => n + t.regsLost, 0);
  const failed = ts.reduce((n, t) => n + t.callsFailed, 0);
  rows.push([
    name,
    ts.length,
    gaps.length ? round(median(gaps), 1) : 'never',
    gaps.length ? round(Math.max(...gaps), 1) : '-',
    ts.length - gaps.length,
    lost,
    failed,
  ]);
  return {
    p50: gaps.length ? round(median(gaps), 1) : null,
    max: gaps.length ? round(Math.max(...gaps), 1) : null,
    lost,
    failed,
  };
};

// Baseline first, on an idle machine: the netns bed pair, host down.
const bed: Trial[] = [];
for (let i = 1; i <= TRIALS; i++) {
  bed.push(await bedHostDown());
  console.log(`bed host_down trial ${i}/${TRIALS}: gap ${bed.at(-1)?.gapMs} ms`);
}
figures.bed_host_down_gap_ms_p50 = summarise('bed: host down', bed).p50;

const metallbDir = buildMetallb(); // before the cluster: a cold build takes minutes
clusterWithImages();
let client: NetBed | null = null;
try {
  client = sipClients();
  installOperator();
  const t0 = Date.now();
  applyExample();
  await until(settled, 180_000, 'the pair is Ready');
  figures.cluster_apply_to_ready_s = round((Date.now() - t0) / 1000, 1);
  const reg = await runSipp(client, client.host('client'), {
    scenario: 'register.xml',
    target: `${VIP}:5060`,
    calls: 1000,
    rate: 250,
    users: USERS,
  });
  if (reg.successful !== 1000) throw new Error(`cluster: ${reg.successful} of 1000 registered`);

  let lost = 0;
  let failed = 0;
  for (const [fault, key] of ARP_FAULTS) {
    if (!asked.includes(fault)) continue;
    const ts: Trial[] = [];
    for (let i = 1; i <= TRIALS; i++) {
      ts.push(await clusterTrial(client, fault));
      const t = ts.at(-1) as Trial;
      console.log(
        `cluster ${fault} trial ${i}/${TRIALS}: gap ${t.gapMs} ms, regs lost ${t.regsLost}, calls failed ${t.callsFailed}; ` +
          `ms after the fault: ${JSON.stringify(t.steps)}, CFS throttled ${t.throttledMs} ms`,
      );
    }
    const s = summarise(`cluster: ${fault}`, ts);
    figures[`${key}_gap_ms_p50`] = s.p50;
    if (fault === 'node-crash') figures.cluster_node_down_gap_ms_max = s.max;
    for (const step of ['serverDown', 'resigned', 'takeover', 'serving', 'firstIn', 'firstOut'] as const) {
      const xs = ts.map((t) => t.steps?.[`${step}Ms`] ?? null).filter((x): x is number => x !== null);
      const snake = step.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      figures[`${key}_${snake}_ms_p50`] = xs.length === ts.length ? round(median(xs), 1) : null; // not logged in every trial: no median
    }
    const thr = ts.map((t) => t.throttledMs).filter((x): x is number => x !== null && x !== undefined);
    figures[`${key}_throttled_ms_max`] = thr.length ? Math.max(...thr) : null;
    lost += s.lost;
    failed += s.failed;
  }
  figures.cluster_regs_lost = lost;
  figures.cluster_calls_failed = failed;
  if (values['skip-metallb']) throw new SkipMetallb();

  // The same pair in metallb mode, behind a real MetalLB, on the same cluster.
  kubectl('delete', 'namespace', NS, '--wait=true', '--timeout=180s');
  await until(() => vipHolders().length === 0, 30_000, 'no node holds the arp-mode VIP any more');
  await installMetallb(metallbDir, VIP);
  applyExample({ vipMode: 'metallb' });
  await until(settled, 180_000, 'the metallb-mode pair is Ready');
  await until(() => ingressIps(NS, LB_SERVICE).includes(VIP), 60_000, 'MetalLB assigned the VIP');
  const lbReg = await runSipp(client, client.host('client'), {
    scenario: 'register.xml',
    target: `${VIP}:5060`,
    calls: 1000,
    rate: 250,
    users: USERS,
  });
  if (lbReg.successful !== 1000) throw new Error(`metallb: ${lbReg.successful} of 1000 registered`);
  const lb: Trial[] = [];
  for (let i = 1; i <= TRIALS; i++) {
    lb.push(await clusterTrial(client, 'pod-delete', { lbTimeline: true }));
    const t = lb.at(-1) as Trial;
    console.log(
      `metallb pod-delete trial ${i}/${TRIALS}: gap ${t.gapMs} ms, regs lost ${t.regsLost}, calls failed ${t.callsFailed}, ` +
        `timeline (ms after the fault) ${JSON.stringify(t.timeline)}`,
    );
  }
  const s = summarise('metallb: pod delete', lb);
  figures.metallb_pod_down_gap_ms_p50 = s.p50;
  figures.metallb_pod_down_gap_ms_max = s.max;
  figures.metallb_regs_lost = s.lost;
  figures.metallb_calls_failed = s.failed;
  const step = (pick: (t: LbTimeline) => number | null) => {
    const xs = lb.map((t) => (t.timeline ? pick(t.timeline) : null)).filter((x): x is number => x !== null);
    return xs.length === lb.length ? round(median(xs), 1) : null; // a step not seen in every trial has no median
  };
  figures.metallb_takeover_ms_p50 = step((t) => t.takeoverMs);
  figures.metallb_label_ms_p50 = step((t) => t.labelMs);
  figures.metallb_endpoints_ms_p50 = step((t) => t.endpointsMs);
  figures.metallb_proxy_sync_ms_p50 = step((t) => t.proxySyncMs);
  figures.metallb_garp_ms_p50 = step((t) => t.garpMs);
} catch (err) {
  if (!(err instanceof SkipMetallb)) throw err;
} finally {
  await client?.destroy();
  k.clusterDown();
}
const sizes = JSON.parse(readFileSync(`${process.env.SIPHA_CACHE ?? `${homedir()}/.cache/sipha`}/images/sizes.json`, 'utf8'));
figures.operator_image_mb = sizes.operator_image_mb;
figures.sidecar_image_mb = sizes.sidecar_image_mb;

table(
  `cluster: the pair as pods (arp mode, then metallb mode: pod delete) vs the netns bed, ${TRIALS} trials each; gap = fault -> first OPTIONS answered via the VIP after the outage (5 ms prober); ${CALLS} calls held 2 s across each fault`,
  ['fault', 'trials', 'gap p50 ms', 'gap max ms', 'never', 'regs lost', 'calls failed'],
  rows,
);
console.log(
  `apply -> Ready ${figures.cluster_apply_to_ready_s} s; images: operator ${figures.operator_image_mb} MB, sidecar ${figures.sidecar_image_mb} MB; ` +
    `metallb pod delete, ms after the fault (p50): sidecar takeover ${figures.metallb_takeover_ms_p50}, role label ${figures.metallb_label_ms_p50}, ` +
    `EndpointSlice ${figures.metallb_endpoints_ms_p50}, kube-proxy sync ${figures.metallb_proxy_sync_ms_p50}, MetalLB ARP on the wire ${figures.metallb_garp_ms_p50}, ` +
    `VIP answers ${figures.metallb_pod_down_gap_ms_p50}`,
);
const outPath = new URL('./out/cluster.json', import.meta.url);
const previous = values.merge && existsSync(outPath) ? (JSON.parse(readFileSync(outPath, 'utf8')) as typeof figures) : {};
writeFigures('cluster', { ...previous, ...figures });
