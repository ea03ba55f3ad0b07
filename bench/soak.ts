/**
 * npm run bench -- soak   [--minutes N] [--every-min N] [--users N] [--ladder r1,r2,...] [--step-s S] [--capture]
 *
 * A long run of the pair under load with failovers (issue 9), on the netns
 * bed (hosts a, b, client, uas, and the UDP witness), real Kamailio, sipp and
 * sidecar processes:
 *   1. --users users (default 10,000) register through the VIP; the called party "uas" too.
 *   2. The pair's max rate, measured here: a ladder of rungs of --step-s seconds, each
 *      REGISTERs at R/s (refreshing the same users) plus calls at R/10 per second
 *      (2 s hold), both sipp runs at once. A rung fails when sipp counts a failed or
 *      unfinished call in either, or either created its calls at < 95% of the target
 *      (sipp's own counters: creationRate). The max is the last rung passed; the
 *      ladder stops at the first failure (past the limit), or says ">=" at its top.
 *   3. The soak: 50% of that rung (REGISTERs and calls) for --minutes (default 30),
 *      with a failover every --every-min minutes (default 5), alternating
 *      kamailio_kill (SIGKILL to the master's Kamailio; it is restarted beside its
 *      sidecar) and host_crash (the master's link down, its Kamailio and sidecar
 *      killed; 5 s later the link is up and both start again). Each time the old
 *      master must rejoin as an in-sync backup.
 * Figures:
 *   soak_regs_lost            of the users (all registered), those missing from the serving master's location table at the end
 *   soak_calls_failed         sipp's failed calls plus calls it created and never finished, over the soak
 *                             (calls it never created, held back by its -l cap: soak_calls_not_created)
 *   soak_rss_slope_mib_per_h  least-squares slope of each sidecar's VmRSS, sampled every 10 s; a restarted
 *                             sidecar starts a new series (pooled slope: each series its own intercept);
 *                             per node (_a, _b), the key the larger
 *   soak_fd_slope_per_h       the same for the sidecar's open descriptors (/proc/PID/fd)
 *   soak_failovers            failovers done (the backup became master)
 * --capture: the calls' packets on the caller's and the called party's hosts during the soak
 * (tcpdump), and afterwards each call the caller never saw end, message by message, timed from
 * the failover before it: what sipp's "unexpected message" was.
 * Progress every minute; traffic only inside the bed (198.18.0.0/24).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Capture, readSipUdp, type SipPacket, startCapture, unfinishedCalls } from '../test/lib/capture.ts';
import { lookupAll } from '../test/lib/kamailio.ts';
import { NetBed } from '../test/lib/netbed.ts';
import { PAIR_BED_HOSTS, type PairNode, role, roleStory, startPair, VIP, WITNESS_HOST } from '../test/lib/pair.ts';
import { sleep, until } from '../test/lib/procs.ts';
import {
  creationRate,
  errorEvents,
  eventsOfCalls,
  failedCallsReport,
  runSipp,
  type SippResult,
  startUas,
  statRows,
  statTime,
  users,
} from '../test/lib/sipp.ts';
import { dropsByReason, dropsGrown, softnetDrops, udpSnmp } from './lib/hostile.ts';
import { CounterGrowth, growthText, readOrNull, udpSnmpOf } from './lib/kernel-drops.ts';
import { NodeSeries, readProcess } from './lib/process-series.ts';
import { round, table, writeFigures } from './lib/report.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    'every-min': { type: 'string', default: '5' },
    users: { type: 'string', default: '10000' },
    ladder: { type: 'string', default: '500,1000,1500,2000,3000,4000,5000,6000,8000' },
    'step-s': { type: 'string', default: '10' },
    capture: { type: 'boolean', default: false },
    // To study one load (e.g. a failure seen there) whatever this run's ladder finds: the
    // soak's REGISTERs per second (calls a tenth of it); the figures say it was chosen.
    rate: { type: 'string' },
  },
});
const MINUTES = Number(values.minutes);
const EVERY_MIN = Number(values['every-min']);
const USERS = users('soak', Number(values.users));
const LADDER = (values.ladder as string).split(',').map(Number);
const STEP_S = Number(values['step-s']);
const CHOSEN_RATE = values.rate === undefined ? null : Number(values.rate);
if (CHOSEN_RATE !== null && !(CHOSEN_RATE > 0)) throw new Error('--rate: REGISTERs per second, > 0');
// The called party registers once (Expires 3600 in register.xml); a longer soak would lose it.
if (!(MINUTES > 0 && MINUTES <= 50)) throw new Error('--minutes: 1 to 50 (the called party registers once, for an hour)');
if (!(EVERY_MIN > 0)) throw new Error('--every-min must be > 0');

/** A rung's calls per second, per REGISTER per second. */
const CALLS_PER_REGISTER = 0.1;
const HOLD_MS = 2000;
const SAMPLE_MS = 10_000;
/** The registering sipp runs beside the calling one (5060) on the client host. */
const REG_PORT = 5070;
const target = `${VIP}:5060`;
const callLimit = (rate: number) => Math.max(100, Math.ceil(rate * (HOLD_MS / 1000 + 1) * 2));

type NodeName = 'a' | 'b';
type Fault = 'kamailio_kill' | 'host_crash';
const FAULT_ORDER: Fault[] = ['kamailio_kill', 'host_crash'];

interface Rung {
  register: number;
  calls: number;
  registerAchieved: number;
  callsAchieved: number;
  registerFailed: number;
  callsFailed: number;
  pass: boolean;
  /** Role changes during the rung (none is asked of it: a takeover under load is a false one). */
  roleChanges: string;
}

/** What a sidecar logged about its role, and its warnings (level >= 40): followed live from its output. */
interface LogEvent {
  /** Seconds since the bench started (when the bench read the line: late by its own event loop). */
  atS: number;
  /** The sidecar's own time of the line (epoch ms, pino's `time`): one clock for both, not late. */
  logMs: number;
  node: NodeName;
  msg: string;
  from?: string;
  to?: string;
  reason?: string;
}

interface Failover {
  n: number;
  atMin: number;
  fault: Fault;
  from: NodeName;
  /** Fault -> the backup reports master (its /metrics polled every ~50 ms: coarse). */
  takeoverMs: number | null;
  /** Fault -> the old master is an in-sync backup again. */
  rejoinS: number | null;
  /** Users missing from the new master's location table once the old one rejoined. */
  regsMissing: number | null;
  /** Seconds since the bench started: the fault, and the end of the rejoin (or of the attempt). */
  window: [number, number];
  /** The fault's wall-clock time (epoch s), for the packet captures' timestamps. */
  atEpochS: number;
  error?: string;
}

const inSync = (n: PairNode) => {
  try {
    return n.sidecar.metric('sipha_in_sync') === 1;
  } catch {
    return false;
  }
};
const failedOf = (r: SippResult, attempted: number) => attempted - r.successful; // failed + never finished
/**
 * A long run's calls by sipp's own counters: failed (FailedCall), created but never finished
 * (failures too: sipp ended, by its run timeout, with them open), and never created (sipp held
 * back by its concurrency cap, -l, or ended by its timeout first: not failures, a lower rate).
 */
const tally = (r: SippResult, target: number) => {
  const last = statRows(r.statsFile).at(-1);
  if (!last) throw new Error('sipp wrote no statistics');
  const created = Number(last['OutgoingCall(C)']);
  const failed = Number(last['FailedCall(C)']);
  return { failed, unfinished: created - r.successful - failed, notCreated: target - created };
};
/** RFC 3261's Timer B (64 x T1): a call waiting longer for a message is failed, not left holding a slot. */
const RECV_TIMEOUT_MS = 32_000;
const achievedOf = (r: SippResult) => creationRate(statRows(r.statsFile));

/** How many unfinished calls the capture prints message by message, per failover (the rest are counted). */
const STORIES = 4;
/**
 * The calls the caller never saw end, from the captures: how many, grouped by the last message the
 * caller received, and the first STORIES of each failover's message by message, timed from the fault before.
 */
const callStories = (
  clientPackets: SipPacket[],
  uasPackets: SipPacket[],
  uac: string,
  failovers: Failover[],
  hostOfMac: Map<string, string>,
  calleeEvents: Map<string, string[]>,
) => {
  const calls = unfinishedCalls(clientPackets, uac, uasPackets);
  const name = (p: SipPacket) => (p.status ? `${p.status} (${p.cseq} ${p.method})` : `${p.method} ${p.cseq}`);
  // Which pair host a packet to or from the VIP really went to or came from (its MAC): ARP's part.
  const via = (p: SipPacket) => {
    const host = p.dst === VIP ? hostOfMac.get(p.dstMac ?? '') : p.src === VIP ? hostOfMac.get(p.srcMac ?? '') : undefined;
    const mac = p.dst === VIP ? p.dstMac : p.srcMac;
    return p.dst === VIP || p.src === VIP ? ` [${p.dst === VIP ? 'to' : 'from'} ${host ?? mac ?? '?'}]` : '';
  };
  // The transaction (the branch's tail) of INVITEs and their answers; an in-dialog request with no Route.
  const txn = (p: SipPacket) => ((p.method === 'INVITE' || p.method === 'BYE') && p.branch ? ` br …${p.branch.slice(-8)}` : '');
  const route = (p: SipPacket) => (p.status === 0 && p.cseq !== '1' && p.hasRoute === false ? ' NO ROUTE' : '');
  const byLast = new Map<string, number>();
  const byFault = new Map<string, number>();
  const lines: string[] = [];
  for (const [callId, ps] of calls) {
    const lastIn = ps.filter((p) => p.dst === uac).at(-1);
    const key = lastIn ? name(lastIn) : 'nothing';
    byLast.set(key, (byLast.get(key) ?? 0) + 1);
    const t0 = ps[0]?.time ?? 0;
    // A call started up to 5 s before a fault (the hold and its BYE) belongs to it.
    const fault = failovers.filter((f) => f.error === undefined && f.atEpochS <= t0 + 5).at(-1);
    const when = fault ? `failover ${fault.n}` : 'before any failover';
    byFault.set(when, (byFault.get(when) ?? 0) + 1);
    if ((byFault.get(when) ?? 0) > STORIES) continue;
    const from = fault?.atEpochS ?? t0;
    const steps = ps.map(
      (p) => `${round((p.time - from) * 1000, 1)} ms ${p.src}->${p.dst} ${name(p)}${via(p)}${txn(p)}${route(p)}`,
    );
    // What the callee's sipp made of the call (e.g. a BYE to a call it had already ended).
    const said = (calleeEvents.get(callId) ?? []).slice(0, 3).map((e) => `callee's sipp: ${e}`);
    lines.push(
      `  ${callId} (${fault ? `after failover ${fault.n}, ${fault.fault}` : 'no failover before it'}):\n    ${[...steps, ...said].join('\n    ')}`,
    );
  }
  return (
    `\ncaptured: ${calls.size} calls the caller never saw end; the last message it received: ` +
    `${[...byLast].map(([k, n]) => `${k} x${n}`).join(', ') || '-'}; by the failover before them: ` +
    `${[...byFault].map(([k, n]) => `${k} x${n}`).join(', ') || '-'}\n${lines.join('\n')}`
  );
};

const benchStart = performance.now();
const sinceStart = () => (performance.now() - benchStart) / 1000;
const events: LogEvent[] = [];
const followed = new WeakSet<object>();
/** Follows a sidecar's log (once per process): role changes and warnings, with their time. */
const follow = (node: NodeName, n: PairNode) => {
  if (followed.has(n.sidecar.child)) return;
  followed.add(n.sidecar.child);
  let buf = '';
  n.sidecar.child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      nl = buf.indexOf('\n');
      if (!line.startsWith('{')) continue;
      try {
        const l = JSON.parse(line) as { time: number; level: number; msg: string; from?: string; to?: string; reason?: string };
        if (l.msg === 'role change' || l.level >= 40)
          events.push({ atS: round(sinceStart(), 2), logMs: l.time, node, msg: l.msg, from: l.from, to: l.to, reason: l.reason });
      } catch {
        // not one of its JSON lines
      }
    }
  });
};
const roleChanges = (from: number, to = Number.POSITIVE_INFINITY) =>
  events.filter((e) => e.msg === 'role change' && e.atS >= from && e.atS < to);
const describe = (es: LogEvent[]) => es.map((e) => `${e.node} ${e.from}->${e.to} (${e.reason})`).join('; ');

/** The called party's sipp error log (read with --capture, when calls failed). */
const UAS_DIR = mkdtempSync(join(tmpdir(), 'sipha-soak-uas-'));
const UAS_ERRORS = join(UAS_DIR, 'errors.log');
const bed = NetBed.create([...PAIR_BED_HOSTS, WITNESS_HOST]);
try {
  const client = bed.host('client');
  const uasHost = bed.host('uas');
  // Log level info (the pair's default): role changes are logged at info.
  const [a0, b0] = await startPair(bed, bed.host('a'), bed.host('b'), {}, { witness: true });
  const nodes: Record<NodeName, PairNode> = { a: a0, b: b0 };
  follow('a', a0);
  follow('b', b0);
  const afterStart = sinceStart();
  const other = (n: NodeName): NodeName => (n === 'a' ? 'b' : 'a');
  const masterName = (): NodeName | null => (role(nodes.a) === 'master' ? 'a' : role(nodes.b) === 'master' ? 'b' : null);
  const settled = () => {
    const m = masterName();
    return m !== null && role(nodes[other(m)]) === 'backup' && inSync(nodes.a) && inSync(nodes.b);
  };

  const reg0 = await runSipp(bed, client, {
    scenario: 'register.xml',
    target,
    calls: USERS.length,
    rate: 1000,
    limit: 3000,
    users: USERS,
    localPort: REG_PORT,
    timeoutS: 60,
  });
  if (reg0.successful !== USERS.length) throw new Error(`only ${reg0.successful} of ${USERS.length} users registered`);
  const uasReg = await runSipp(bed, uasHost, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
  if (uasReg.successful !== 1) throw new Error(`the called party did not register: ${uasReg.errors}`);
  const uas = startUas(uasHost, 5060, 'u1', UAS_ERRORS);

  // ---- the pair's max rate: REGISTERs at R/s plus calls at R/10 per second ----
  const rungs: Rung[] = [];
  for (const rate of LADDER) {
    const rungFrom = sinceStart();
    const callRate = Math.round(rate * CALLS_PER_REGISTER);
    const [reg, calls] = await Promise.all([
      runSipp(bed, client, {
        scenario: 'register.xml',
        target,
        calls: rate * STEP_S,
        rate,
        limit: Math.max(rate * 3, 100),
        users: USERS,
        localPort: REG_PORT,
        timeoutS: STEP_S + 30,
      }),
      runSipp(bed, client, {
        scenario: 'uac-call.xml',
        target,
        calls: callRate * STEP_S,
        rate: callRate,
        limit: callLimit(callRate),
        service: 'uas',
        holdMs: HOLD_MS,
        recvTimeoutMs: RECV_TIMEOUT_MS,
        timeoutS: STEP_S + HOLD_MS / 1000 + 30,
      }),
    ]);
    const r: Rung = {
      register: rate,
      calls: callRate,
      registerAchieved: achievedOf(reg),
      callsAchieved: achievedOf(calls),
      registerFailed: failedOf(reg, rate * STEP_S),
      callsFailed: failedOf(calls, callRate * STEP_S),
      pass: false,
      roleChanges: '',
    };
    await sleep(1000); // a role change caused by the rung's end is logged within it
    r.roleChanges = describe(roleChanges(rungFrom));
    // A rate the pair serves only by changing master under it (a false takeover) is past its max.
    r.pass =
      r.registerFailed === 0 &&
      r.callsFailed === 0 &&
      r.registerAchieved >= 0.95 * rate &&
      r.callsAchieved >= 0.95 * callRate &&
      r.roleChanges === '';
    rungs.push(r);
    console.log(
      `ladder ${rate} REGISTER/s + ${callRate} calls/s: achieved ${Math.round(r.registerAchieved)} + ${round(r.callsAchieved, 1)}/s, ` +
        `failed ${r.registerFailed} + ${r.callsFailed} -> ${r.pass ? 'pass' : 'FAIL'}${r.roleChanges ? `; role changes: ${r.roleChanges}` : ''}`,
    );
    if (!r.pass) break;
    await sleep(1000); // the last retransmissions and the backup's writes settle before the next rung
  }
  const best = rungs.filter((r) => r.pass).at(-1);
  if (!best) throw new Error(`the pair failed the ladder's first rung (${LADDER[0]}/s): no max rate to take half of`);
  const atTop = rungs.every((r) => r.pass);
  await until(settled, 60_000, 'a master and an in-sync backup after the ladder', () => roleStory(nodes.a, nodes.b));
  const rolesAfterLadder = `a ${role(nodes.a)}, b ${role(nodes.b)}`;

  // ---- the soak ----
  const regRate = CHOSEN_RATE ?? Math.round(best.register / 2);
  const callRate = CHOSEN_RATE !== null ? Math.round(CHOSEN_RATE * CALLS_PER_REGISTER) : Math.round(best.calls / 2);
  const rateFrom = CHOSEN_RATE !== null ? '--rate' : `50% of the ladder's ${atTop ? '>= ' : ''}${best.register} + ${best.calls}`;
  const seconds = MINUTES * 60;
  const regCount = regRate * seconds;
  const callCount = callRate * seconds;
  console.log(
    `\nmax rate: ${atTop ? '>= ' : ''}${best.register} REGISTER/s + ${best.calls} calls/s; soak at ${regRate} + ${callRate}/s (${rateFrom}) ` +
      `for ${MINUTES} min, a failover every ${EVERY_MIN} min (roles after the ladder: ${rolesAfterLadder})`,
  );
  const series: Record<NodeName, NodeSeries> = { a: new NodeSeries(), b: new NodeSeries() };
  const t0 = performance.now();
  const soakFrom = sinceStart();
  const sample = () => {
    for (const name of ['a', 'b'] as const) {
      const pid = nodes[name].sidecar.child.pid;
      if (pid === undefined || nodes[name].sidecar.child.exitCode !== null) continue;
      try {
        series[name].add(pid, { t: (performance.now() - t0) / 1000, ...readProcess(pid) });
      } catch {
        // gone meanwhile (the host crash): no sample, never a made-up one
      }
    }
  };
  // The machine's load beside: other work on the shared cores starves the pair as much as its own load.
  const loads: number[] = [];
  const sampleAll = () => {
    sample();
    loads.push(loadavg()[0] as number);
  };
  sampleAll();
  const sampler = setInterval(sampleAll, SAMPLE_MS);
  // Datagrams the kernel dropped for a full receive buffer, per bed host, each second (a
  // stalled process loses them before any counter of its own sees them), and the
  // host-wide input backlog's drops (softnet): put beside the failovers' call stories.
  const kernelDrops = new CounterGrowth();
  const rcvbufErrors = (read: () => Record<string, number>) => readOrNull(() => read().RcvbufErrors ?? null);
  const sampleDrops = () => {
    const t = sinceStart();
    for (const n of ['a', 'b'] as const) {
      const { child } = nodes[n].sidecar;
      if (child.pid !== undefined && child.exitCode === null)
        kernelDrops.add(
          t,
          n,
          rcvbufErrors(() => udpSnmpOf(child.pid as number)),
        );
    }
    if (uas.child.pid !== undefined)
      kernelDrops.add(
        t,
        'callee',
        rcvbufErrors(() => udpSnmpOf(uas.child.pid as number)),
      );
    kernelDrops.add(
      t,
      'caller',
      rcvbufErrors(() => udpSnmp(client)),
    );
    kernelDrops.add(t, 'softnet', softnetDrops());
  };
  sampleDrops();
  const dropSampler = setInterval(sampleDrops, 1000);

  // The calls only (the REGISTERs come from port REG_PORT): the caller's and the called party's wires.
  const captures: Capture[] = values.capture
    ? await Promise.all([
        startCapture(bed, client, `udp and port 5060 and not port ${REG_PORT}`),
        startCapture(bed, uasHost, 'udp and port 5060'),
      ])
    : [];
  let regStats = '';
  let callStats = '';
  const regRun = runSipp(bed, client, {
    scenario: 'register.xml',
    target,
    calls: regCount,
    rate: regRate,
    limit: Math.max(regRate * 3, 100),
    users: USERS,
    localPort: REG_PORT,
    recvTimeoutMs: RECV_TIMEOUT_MS,
    timeoutS: seconds + 120,
    onStart: (f) => {
      regStats = f;
    },
  });
  const callRun = runSipp(bed, client, {
    scenario: 'uac-call.xml',
    target,
    calls: callCount,
    rate: callRate,
    limit: callLimit(callRate),
    service: 'uas',
    holdMs: HOLD_MS,
    recvTimeoutMs: RECV_TIMEOUT_MS,
    timeoutS: seconds + 120,
    onStart: (f) => {
      callStats = f;
    },
  });
  let loadDone = false;
  const load = Promise.all([regRun, callRun]).finally(() => {
    loadDone = true;
  });

  const failovers: Failover[] = [];
  const failover = async (fault: Fault, atMin: number): Promise<Failover> => {
    // Under load the roles may be moving on their own: the fault waits (30 s at most) for a settled pair.
    await until(settled, 30_000, 'a settled pair').catch(() => {});
    const from = masterName();
    const f: Failover = {
      n: failovers.length + 1,
      atMin,
      fault,
      from: from ?? 'a',
      takeoverMs: null,
      rejoinS: null,
      regsMissing: null,
      window: [sinceStart(), Number.NaN],
      atEpochS: Date.now() / 1000,
    };
    try {
      if (from === null || !settled())
        throw new Error(`no settled pair before the fault (a ${role(nodes.a)}, b ${role(nodes.b)})`);
      const to = other(from);
      const old = nodes[from];
      const t = performance.now();
      f.atEpochS = Date.now() / 1000;
      if (fault === 'kamailio_kill') {
        await bed.stop(old.kamailio.child, 'SIGKILL');
      } else {
        old.host.run('ip', ['link', 'set', 'eth0', 'down']);
        await Promise.all([bed.stop(old.kamailio.child, 'SIGKILL'), bed.stop(old.sidecar.child, 'SIGKILL')]);
      }
      await until(() => role(nodes[to]) === 'master', 10_000, `${to} took over`);
      f.takeoverMs = round(performance.now() - t, 1);
      // The old master comes back: its server restarted beside its sidecar (a kubelet restarting
      // the container), or after the crash, the host back up 5 s later with both starting afresh.
      if (fault === 'kamailio_kill') nodes[from] = await old.restartKamailio();
      else {
        await sleep(5000);
        old.host.run('ip', ['link', 'set', 'eth0', 'up']);
        // Live, not ready: a backup is ready once in sync, which the wait below measures (60 s at
        // most; under load on a slow host a rejoin took over the 15 s a restart waits for ready).
        nodes[from] = await old.restart({ SIPHA_TEST_LIVE_ONLY: '1' });
        follow(from, nodes[from]);
      }
      await until(
        () => role(nodes[from]) === 'backup' && inSync(nodes[from]) && inSync(nodes[to]),
        60_000,
        `${from} rejoined as an in-sync backup`,
        () => roleStory(nodes.a, nodes.b),
      );
      f.rejoinS = round((performance.now() - t) / 1000, 2);
      f.regsMissing = USERS.length - lookupAll(nodes[to].kamailio, USERS).size;
    } catch (err) {
      f.error = (err as Error).message.split('\n')[0];
    }
    f.window[1] = sinceStart();
    console.log(
      `failover ${f.n} (${fault}, ${f.from} was master) at ${atMin} min: took over in ${f.takeoverMs ?? '-'} ms, ` +
        `old master in sync after ${f.rejoinS ?? '-'} s, users missing ${f.regsMissing ?? '-'}${f.error ? `; ERROR ${f.error}` : ''}`,
    );
    return f;
  };

  // One line a minute, from sipp's own counters: what each run created since the last line, and its totals.
  let last = { t: 0, reg: 0, calls: 0 };
  let lastDropsAt = soakFrom;
  const lastDrops = { a: new Map<string, number>(), b: new Map<string, number>() };
  const progress = (minute: number) => {
    const r = statRows(regStats).at(-1);
    const c = statRows(callStats).at(-1);
    if (!r || !c) return console.log(`min ${minute}: sipp has written no statistics yet`);
    const t = statTime(r.CurrentTime);
    const regMade = Number(r['OutgoingCall(C)']);
    const callsMade = Number(c['OutgoingCall(C)']);
    const dt = last.t ? t - last.t : t - statTime(r.StartTime);
    const mem = (['a', 'b'] as const)
      .map((n) => {
        const s = series[n].series.at(-1)?.samples.at(-1);
        return `${n} ${role(nodes[n])} ${s ? `${round(s.rssMiB, 1)} MiB ${s.fds} fds` : '-'}`;
      })
      .join(', ');
    // Messages each sidecar dropped this minute, by path and reason (a restarted one counts from 0).
    const drops = (['a', 'b'] as const)
      .map((n) => {
        let now: Map<string, number>;
        try {
          now = dropsByReason(nodes[n]);
        } catch {
          return `${n} -`; // not answering /metrics (restarting)
        }
        const grown = dropsGrown(lastDrops[n], now);
        lastDrops[n] = now;
        return grown ? `${n} ${grown}` : '';
      })
      .filter(Boolean)
      .join('; ');
    const now = sinceStart();
    const kernel = growthText(kernelDrops.between(lastDropsAt, now));
    lastDropsAt = now;
    console.log(
      `min ${minute}/${MINUTES}: REGISTER ${Math.round((regMade - last.reg) / dt)}/s (ok ${r['SuccessfulCall(C)']}, failed ${r['FailedCall(C)']}), ` +
        `calls ${round((callsMade - last.calls) / dt, 1)}/s (ok ${c['SuccessfulCall(C)']}, failed ${c['FailedCall(C)']}, in progress ${c.CurrentCall}); ` +
        `${mem}; failovers ${failovers.filter((f) => !f.error).length}, role changes ${roleChanges(soakFrom).length}, load ${round(loadavg()[0] as number, 1)}` +
        (drops ? `; dropped: ${drops}` : '') +
        (kernel ? `; kernel UDP drops: ${kernel}` : ''),
    );
    last = { t, reg: regMade, calls: callsMade };
  };

  const faultAt: number[] = [];
  for (let m = EVERY_MIN; m < MINUTES; m += EVERY_MIN) faultAt.push(m);
  let minute = 1;
  const deadline = t0 + (seconds + 180) * 1000;
  while (!loadDone && performance.now() < deadline) {
    const elapsedMin = (performance.now() - t0) / 60_000;
    if (faultAt.length > 0 && elapsedMin >= (faultAt[0] as number)) {
      const at = faultAt.shift() as number;
      failovers.push(await failover(FAULT_ORDER[failovers.length % FAULT_ORDER.length] as Fault, at));
    }
    if (elapsedMin >= minute) progress(minute++);
    await sleep(500);
  }
  const [reg, calls] = await load;
  const soakTo = sinceStart();
  clearInterval(sampler);
  clearInterval(dropSampler);
  sample();
  await bed.stop(uas.child);

  // The serving Kamailio: the master's; with no master after a minute (the roles still moving), the
  // Kamailio holding more of the users, and the figures say so.
  const masterAtEnd = await until(() => masterName() !== null, 60_000, 'a master at the end').then(
    () => true,
    () => false,
  );
  const serving =
    masterName() ??
    (lookupAll(nodes.a.kamailio, USERS).size >= lookupAll(nodes.b.kamailio, USERS).size ? ('a' as const) : ('b' as const));
  const found = lookupAll(nodes[serving].kamailio, [...USERS, 'uas']);
  const regsLost = USERS.length - USERS.filter((u) => found.has(u)).length;
  // After a failover that failed part-way the bench may hold a node whose server it lost track of:
  // say so instead of losing the run's figures.
  let backupFound: number | null = null;
  try {
    backupFound = lookupAll(nodes[other(serving)].kamailio, USERS).size;
  } catch (err) {
    console.log(`the backup's location table could not be read: ${(err as Error).message.split('\n')[0]}`);
  }

  // Role changes outside the failovers' windows (fault -> old master back in sync): takeovers nobody caused.
  const unplanned = roleChanges(soakFrom, soakTo).filter(
    (e) => !failovers.some((f) => e.atS >= f.window[0] && e.atS <= f.window[1]),
  );
  const warnings = events.filter((e) => e.msg !== 'role change' && e.atS >= soakFrom && e.atS < soakTo);
  const at = (e: LogEvent) => `+${round(e.atS - soakFrom, 1)} s`;
  if (unplanned.length)
    console.log(`\nrole changes outside the failovers:\n${unplanned.map((e) => `  ${at(e)} ${describe([e])}`).join('\n')}`);
  if (warnings.length) {
    const byMsg = new Map<string, number>();
    for (const w of warnings) byMsg.set(`${w.node}: ${w.msg}`, (byMsg.get(`${w.node}: ${w.msg}`) ?? 0) + 1);
    console.log(`sidecar warnings during the soak: ${[...byMsg].map(([m, n]) => `${m} x${n}`).join('; ')}`);
  }
  // The kernel's drops in the 30 s after each fault, by second, and in the rest of the soak.
  if (kernelDrops.grows.length) {
    const near = (t: number) => failovers.find((f) => t >= f.window[0] && t < f.window[0] + 30);
    const lines = failovers
      .map((f) => {
        const gs = kernelDrops.grows.filter((g) => near(g.t) === f);
        const text = gs.map((g) => `${g.source} +${g.n} at +${Math.round(g.t - f.window[0])} s`).join(', ');
        return text ? `  failover ${f.n} (${f.fault}): ${text}` : '';
      })
      .filter(Boolean);
    const rest = growthText(
      kernelDrops.grows
        .filter((g) => g.t >= soakFrom && g.t < soakTo && !near(g.t))
        .reduce((m, g) => m.set(g.source, (m.get(g.source) ?? 0) + g.n), new Map<string, number>()),
    );
    console.log(
      `\nkernel UDP receive-buffer drops (a, b, caller, callee) and input-backlog drops (softnet), by second:\n${lines.join('\n')}` +
        `\n  the rest of the soak: ${rest || 'none'}`,
    );
  }
  if (calls.successful + tally(calls, callCount).notCreated !== callCount)
    console.log(`\nwhere the failed calls stopped, and sipp's error log:\n${failedCallsReport(calls)}`);
  if (captures.length) {
    const [clientPackets, uasPackets] = await Promise.all(captures.map(async (c) => readSipUdp(await c.stop())));
    // A capture on a busy host misses packets: a call "never ended" may have, unseen.
    console.log(
      `\ncapture: the kernel dropped ${captures.map((c) => c.kernelDrops() ?? '?').join(' (caller) and ')} (callee) packets`,
    );
    const hostOfMac = new Map(
      (['a', 'b'] as const).map((h) => [
        bed
          .host(h)
          .run('cat', [`/sys/class/net/${bed.host(h).iface}/address`])
          .trim(),
        h,
      ]),
    );
    const calleeEvents = existsSync(UAS_ERRORS) ? eventsOfCalls(readFileSync(UAS_ERRORS, 'utf8')) : new Map();
    console.log(
      callStories(clientPackets as SipPacket[], uasPackets as SipPacket[], client.ip, failovers, hostOfMac, calleeEvents),
    );
    // The callee's side: a call it aborted absorbs what comes after (sipp's dead calls), silently.
    if (existsSync(UAS_ERRORS))
      console.log(
        `\nthe called party's error log (ladder and soak), last events:\n${errorEvents(readFileSync(UAS_ERRORS, 'utf8')).slice(-4000)}`,
      );
  }

  // ---- figures ----
  const slope = (n: NodeName, f: 'rssMiB' | 'fds', fromS = 0) => round(series[n].slopePerHour(f, fromS), f === 'rssMiB' ? 2 : 1);
  // The second half alone: V8 grows its heap for a while before its first full collections
  // (--initial-old-space-size=128), a rise that is warm-up, not a leak.
  const halfS = (soakTo - soakFrom) / 2;
  const maxOf = (x: number, y: number) => (Number.isNaN(x) ? y : Number.isNaN(y) ? x : Math.max(x, y));
  const done = failovers.filter((f) => !f.error);
  const regAchieved = achievedOf(reg);
  const regTally = tally(reg, regCount);
  const callTally = tally(calls, callCount);
  const callsAchieved = achievedOf(calls);
  const figures = {
    soak_regs_lost: regsLost,
    soak_calls_failed: callTally.failed + callTally.unfinished,
    soak_rss_slope_mib_per_h: maxOf(slope('a', 'rssMiB'), slope('b', 'rssMiB')),
    soak_fd_slope_per_h: maxOf(slope('a', 'fds'), slope('b', 'fds')),
    soak_failovers: done.length,
    soak_rss_slope_mib_per_h_a: slope('a', 'rssMiB'),
    soak_rss_slope_mib_per_h_b: slope('b', 'rssMiB'),
    soak_fd_slope_per_h_a: slope('a', 'fds'),
    soak_fd_slope_per_h_b: slope('b', 'fds'),
    soak_rss_slope_mib_per_h_second_half: maxOf(slope('a', 'rssMiB', halfS), slope('b', 'rssMiB', halfS)),
    soak_fd_slope_per_h_second_half: maxOf(slope('a', 'fds', halfS), slope('b', 'fds', halfS)),
    soak_failover_errors: failovers.length - done.length,
    soak_unplanned_role_changes: unplanned.length,
    soak_sidecar_warnings: warnings.length,
    soak_ladder_role_changes: rungs.filter((r) => r.roleChanges).length,
    soak_role_changes_before_ladder: roleChanges(0, afterStart).length,
    soak_failover_faults: failovers.map((f) => f.fault).join(','),
    soak_takeover_ms_max: done.length ? Math.max(...done.map((f) => f.takeoverMs as number)) : null,
    soak_rejoin_s_max: done.length ? Math.max(...done.map((f) => f.rejoinS as number)) : null,
    soak_regs_missing_after_failover_max: done.length ? Math.max(...done.map((f) => f.regsMissing as number)) : null,
    soak_backup_regs_missing_at_end: backupFound === null ? null : USERS.length - backupFound,
    soak_uas_registered_at_end: found.has('uas'),
    soak_master_at_end: masterAtEnd,
    soak_minutes: MINUTES,
    soak_every_min: EVERY_MIN,
    soak_users: USERS.length,
    soak_register_rate: regRate,
    soak_rate_from: CHOSEN_RATE !== null ? 'option' : 'ladder',
    soak_register_rate_achieved: round(regAchieved, 1),
    soak_registers: regCount,
    soak_registers_failed: regTally.failed + regTally.unfinished,
    soak_registers_not_created: regTally.notCreated,
    soak_call_rate: callRate,
    soak_call_rate_achieved: round(callsAchieved, 2),
    soak_calls: callCount,
    soak_calls_failed_by_sipp: callTally.failed,
    soak_calls_unfinished: callTally.unfinished,
    soak_calls_not_created: callTally.notCreated,
    soak_call_hold_ms: HOLD_MS,
    soak_max_register_rate: best.register,
    soak_max_call_rate: best.calls,
    soak_max_rate_at_ladder_top: atTop,
    soak_ladder: rungs
      .map(
        (r) =>
          `${r.register}+${r.calls}:${Math.round(r.registerAchieved)}+${round(r.callsAchieved, 1)}/${r.pass ? 'pass' : 'FAIL'}`,
      )
      .join(' '),
    soak_ladder_step_s: STEP_S,
    soak_loadavg_1m_mean: round(loads.reduce((n, x) => n + x, 0) / loads.length, 2),
    soak_loadavg_1m_max: round(Math.max(...loads), 2),
    soak_kernel_udp_drops_a: kernelDrops.total('a'),
    soak_kernel_udp_drops_b: kernelDrops.total('b'),
    soak_kernel_udp_drops_caller: kernelDrops.total('caller'),
    soak_kernel_udp_drops_callee: kernelDrops.total('callee'),
    soak_softnet_drops: kernelDrops.total('softnet'),
    soak_rss_samples: series.a.count() + series.b.count(),
    soak_rss_series: `a ${series.a.series.length}, b ${series.b.series.length}`,
  };

  table(
    `the pair's max rate: ${STEP_S} s rungs, REGISTERs at R/s + calls at R/10 per second (${HOLD_MS} ms hold); achieved = sipp's creation rate`,
    ['REGISTER/s', 'calls/s', 'REGISTER achieved', 'calls achieved', 'REGISTER failed', 'calls failed', 'result', 'role changes'],
    rungs.map((r) => [
      r.register,
      r.calls,
      Math.round(r.registerAchieved),
      round(r.callsAchieved, 1),
      r.registerFailed,
      r.callsFailed,
      r.pass ? 'pass' : 'FAIL',
      r.roleChanges || '-',
    ]),
  );
  table(
    'failovers',
    ['#', 'at min', 'fault', 'master was', 'takeover ms (role poll)', 'rejoined in sync s', 'users missing', 'error'],
    failovers.map((f) => [
      f.n,
      f.atMin,
      f.fault,
      f.from,
      f.takeoverMs ?? '-',
      f.rejoinS ?? '-',
      f.regsMissing ?? '-',
      f.error ?? '',
    ]),
  );
  table(
    `sidecar memory and descriptors, sampled every ${SAMPLE_MS / 1000} s (a series per process)`,
    ['node', 'pid', 'samples', 'minutes', 'RSS first MiB', 'RSS last MiB', 'RSS max MiB', 'fds first', 'fds last', 'fds max'],
    (['a', 'b'] as const).flatMap((n) =>
      series[n].series.map((s) => {
        const first = s.samples[0] as { t: number; rssMiB: number; fds: number };
        const lastS = s.samples.at(-1) as { t: number; rssMiB: number; fds: number };
        return [
          n,
          s.pid,
          s.samples.length,
          round((lastS.t - first.t) / 60, 1),
          round(first.rssMiB, 1),
          round(lastS.rssMiB, 1),
          round(Math.max(...s.samples.map((x) => x.rssMiB)), 1),
          first.fds,
          lastS.fds,
          Math.max(...s.samples.map((x) => x.fds)),
        ];
      }),
    ),
  );
  table(
    `soak: ${MINUTES} min at ${regRate} REGISTER/s + ${callRate} calls/s (${rateFrom}), ${USERS.length} users, a failover every ${EVERY_MIN} min`,
    ['figure', 'value'],
    Object.entries(figures)
      .filter(([k]) => !k.startsWith('soak_ladder'))
      .map(([k, v]) => [k, v === null ? '-' : typeof v === 'number' ? v : String(v)]),
  );
  writeFigures('soak', figures);
  // What the figures summarise, for whoever reads them later: every rung, failover and sidecar event.
  const eventsFile = fileURLToPath(new URL('./out/soak-events.json', import.meta.url));
  writeFileSync(
    eventsFile,
    `${JSON.stringify(
      {
        rungs,
        failovers,
        soakFromS: round(soakFrom, 2),
        soakToS: round(soakTo, 2),
        events,
        series: { a: series.a.series, b: series.b.series },
        loads,
      },
      null,
      1,
    )}\n`,
  );
  console.log(`wrote ${eventsFile}`);
} finally {
  await bed.destroy();
  rmSync(UAS_DIR, { recursive: true, force: true });
}
