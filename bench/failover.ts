/**
 * npm run bench -- failover   [--trials N] [--quick]
 *   [--call-rate N --hold-ms MS]   stress: more calls in flight at the fault
 *                                  (keys get a _<N>cps suffix; defaults 10/s, 10 s hold)
 *
 * Failover on the netns bed, sipha against keepalived in the same run with
 * the same Kamailio build and configuration, for two faults:
 *   host_down:     the master's link goes down and its processes are killed;
 *   kamailio_kill: only the master's Kamailio gets SIGKILL.
 * Each trial: a fresh bed (hosts a, b, client, uas); 1000 users register via
 * the VIP; (sipha) calls run at 10/s with 10 s hold; an OPTIONS prober sends
 * every 10 ms; the fault; then:
 *   gap        = fault -> first OPTIONS answered via the VIP (probe sent after the fault);
 *   regs lost  = of the 1000, those the new master's location table lacks;
 *   calls failed (sipha, keepalived_dmq) = sipp's failed calls (established or in setup);
 *   backup egress (sipha) = SIP packets the backup sent before the fault (tcpdump on its interface).
 * keepalived runs three times: default (VRRPv2, advert_int 1), the fastest it
 * accepts (VRRPv3, advert_int 0.01), both with a 1 s track script on Kamailio,
 * and the fastest with Kamailio replicating its registrations itself (dmq +
 * dmq_usrloc, test/lib/kamailio-dmq.ts: the alternative a Kamailio user
 * weighs), which also runs the calls (the called party's registration survives).
 *
 * Then host_down with TLS and TCP clients (--streams tls,tcp; sipha only):
 * 200 clients each on its own connection, 100 calls established, the crash,
 * the clients reconnect 1-4 s later and re-register, the far end hangs up
 * every call (bench/lib/stream-failover.ts). Keys tls_host_down_gap_ms_p50,
 * <t>_host_down_regs_lost, <t>_host_down_calls_failed, <t>_host_down_dialogs_stuck.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readSip, startCapture } from '../test/lib/capture.ts';
import { lookupAll } from '../test/lib/kamailio.ts';
import { FASTEST_ADVERT_S, holdsVip, startKeepalivedPair } from '../test/lib/keepalived.ts';
import { type Host, NetBed } from '../test/lib/netbed.ts';
import { PAIR_BED_HOSTS, role, startPair, VIP } from '../test/lib/pair.ts';
import { gapMs, startProber } from '../test/lib/prober.ts';
import { until } from '../test/lib/procs.ts';
import { creationRate, failedCallsReport, runSipp, startUas, statRows, users } from '../test/lib/sipp.ts';
import { dropsGrown, udpSnmp } from './lib/hostile.ts';
import { readOrNull, udpSnmpOf, udpSocketDrops } from './lib/kernel-drops.ts';
import { type Figures, median, round, table, writeFigures } from './lib/report.ts';
import { type StreamTrial, streamTrial } from './lib/stream-failover.ts';

const { values } = parseArgs({
  options: {
    trials: { type: 'string' },
    quick: { type: 'boolean', default: false },
    // REGISTER rate of the no-false-takeover phase: 80% of the pair's max (bench/out/replication.json).
    'load-rate': { type: 'string' },
    'load-seconds': { type: 'string', default: '120' },
    'only-load': { type: 'boolean', default: false },
    // Narrow a run: comma-separated systems (sipha,keepalived,keepalived_fast,keepalived_dmq) and faults.
    systems: { type: 'string', default: 'sipha,keepalived,keepalived_fast,keepalived_dmq' },
    faults: { type: 'string', default: 'kamailio_kill,host_down' },
    'skip-load': { type: 'boolean', default: false },
    // Overlay this run's keys on bench/out/failover.json instead of replacing it (for narrowed runs).
    merge: { type: 'boolean', default: false },
    // Calls during a sipha trial: rate * 6 calls at this rate, the fault 4 s in.
    'call-rate': { type: 'string', default: '10' },
    'hold-ms': { type: 'string', default: '10000' },
    // Host crash with TCP / TLS clients that reconnect (empty: none).
    streams: { type: 'string', default: 'tls,tcp' },
  },
});
const TRIALS = Number(values.trials ?? (values.quick ? 2 : 5));
const USERS = users('fo', 1000);
const CALL_RATE = Number(values['call-rate']);
const CALLS = CALL_RATE * 6;
const HOLD_MS = Number(values['hold-ms']);
/** The keys are for 10 calls/s with 10 s hold; a stress run's keys say their rate. */
const SUFFIX = CALL_RATE === 10 && HOLD_MS === 10_000 ? '' : `_${CALL_RATE}cps`;
type Fault = 'host_down' | 'kamailio_kill';
type System = 'sipha' | 'keepalived' | 'keepalived_fast' | 'keepalived_dmq';
/** Systems that keep the called party's registration, so calls can run through the fault. */
const withCalls = (s: System) => s === 'sipha' || s === 'keepalived_dmq';

interface Trial {
  gapMs: number | null;
  regsLost: number;
  callsFailed: number | null;
  backupEgress: number | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * host_down: the instant the link is down (probes sent before can still be
 * answered by the old master). kamailio_kill: the instant of SIGKILL, sent to
 * the process group of the master's Kamailio right here.
 */
async function injectFault(fault: Fault, master: Host): Promise<{ ns: bigint; wall: number }> {
  if (fault === 'host_down') master.run('ip', ['link', 'set', 'eth0', 'down']);
  return { ns: process.hrtime.bigint(), wall: Date.now() / 1000 };
}

async function trial(system: System, fault: Fault): Promise<Trial> {
  const bed = NetBed.create(PAIR_BED_HOSTS);
  try {
    const [ha, hb, client, uasHost] = ['a', 'b', 'client', 'uas'].map((n) => bed.host(n)) as [Host, Host, Host, Host];
    const target = `${VIP}:5060`;
    /** Injects the fault; returns the instant it took effect (hrtime ns, and wall s for pcap times). */
    let killMaster: () => Promise<{ ns: bigint; wall: number }>;
    let newMasterLookup: () => Map<string, unknown>;
    let capture: Awaited<ReturnType<typeof startCapture>> | null = null;
    if (system === 'sipha') {
      const [a, b] = await startPair(bed, ha, hb, { SIPHA_LOG_LEVEL: 'warn' });
      capture = await startCapture(bed, hb, `src host ${hb.ip} and port 5060`);
      killMaster = async () => {
        const at = await injectFault(fault, ha);
        await Promise.all([
          bed.stop(a.kamailio.child, 'SIGKILL'),
          ...(fault === 'host_down' ? [bed.stop(a.sidecar.child, 'SIGKILL')] : []),
        ]);
        return at;
      };
      newMasterLookup = () => lookupAll(b.kamailio, USERS);
    } else {
      const [a, b] = await startKeepalivedPair(bed, ha, hb, VIP, {
        profile: system === 'keepalived' ? 'default' : 'fastest',
        dmq: system === 'keepalived_dmq',
      });
      await until(() => holdsVip(ha, VIP), 15000, 'keepalived: a holds the VIP');
      killMaster = async () => {
        const at = await injectFault(fault, ha);
        await Promise.all([
          bed.stop(a.kamailio.child, 'SIGKILL'),
          ...(fault === 'host_down' ? [bed.stop(a.keepalived, 'SIGKILL')] : []),
        ]);
        return at;
      };
      newMasterLookup = () => lookupAll(b.kamailio, USERS);
    }

    const reg = await runSipp(bed, client, {
      scenario: 'register.xml',
      target,
      calls: USERS.length,
      rate: 500,
      users: USERS,
      timeoutS: 30,
    });
    if (reg.successful !== USERS.length) throw new Error(`${system}: only ${reg.successful} of ${USERS.length} registered`);

    let calls: ReturnType<typeof runSipp> | null = null;
    let uas: ReturnType<typeof startUas> | null = null;
    if (withCalls(system)) {
      await runSipp(bed, uasHost, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
      uas = startUas(uasHost);
      calls = runSipp(bed, client, {
        scenario: 'uac-call.xml',
        target,
        calls: CALLS,
        rate: CALL_RATE,
        limit: Math.max(200, Math.ceil(CALL_RATE * (HOLD_MS / 1000 + 2) * 2)),
        service: 'uas',
        holdMs: HOLD_MS,
        timeoutS: 60,
      });
    }
    const prober = startProber(bed, client, VIP, 10, 9000);
    await sleep(4000);
    const { ns: faultNs, wall: faultWall } = await killMaster();
    const gap = gapMs(await prober.done, faultNs);

    let callsFailed: number | null = null;
    if (calls) {
      const r = await calls;
      callsFailed = r.failed + (CALLS - r.successful - r.failed);
      if (callsFailed > 0) console.log(failedCallsReport(r));
      if (uas) await bed.stop(uas.child);
    }
    let backupEgress: number | null = null;
    if (capture) {
      const packets = readSip(await capture.stop());
      backupEgress = packets.filter((p) => p.time < faultWall).length;
    }
    const found = newMasterLookup();
    return { gapMs: gap === null ? null : round(gap, 1), regsLost: USERS.length - found.size, callsFailed, backupEgress };
  } finally {
    await bed.destroy();
  }
}

interface LoadPhase {
  takeovers: number;
  /** REGISTERs sipp counted not successful, % of those asked. */
  failedPct: number;
  /** The rate sipp created REGISTERs at while still creating (its statistics rows), per second. */
  achieved: number;
  lateTicks100: number;
  /** sipp's Retransmissions(C) and FailedMaxUDPRetrans(C): a pair past its capacity shows here first. */
  retransmissions: number;
  timedOut: number;
  /** Each host's kernel UDP receive-buffer drops (RcvbufErrors) over the run; null: its process was gone. */
  kernelDropsA: number | null;
  kernelDropsB: number | null;
  kernelDropsClient: number;
  /** Which pair sockets overflowed: "a 198.18.0.100:5060 +N, ...", '' when none. */
  socketDrops: string;
}

/** The load phase's keys (the full run and --only-load write the same). */
function loadFigures(rate: LoadRate, lp: LoadPhase): Record<string, number | string | null> {
  return {
    false_takeovers: lp.takeovers,
    false_takeover_load_rate: rate.rate,
    false_takeover_load_rate_from: rate.from,
    false_takeover_load_seconds: Number(values['load-seconds']),
    false_takeover_load_achieved: lp.achieved,
    false_takeover_load_failed_pct: lp.failedPct,
    false_takeover_load_retransmissions: lp.retransmissions,
    false_takeover_load_timed_out: lp.timedOut,
    false_takeover_load_kernel_drops_a: lp.kernelDropsA,
    false_takeover_load_kernel_drops_b: lp.kernelDropsB,
    false_takeover_load_kernel_drops_client: lp.kernelDropsClient,
    false_takeover_load_socket_drops: lp.socketDrops,
    false_takeover_heartbeat_ticks_late_100ms: lp.lateTicks100,
  };
}

/**
 * No false takeover: the pair under REGISTER load at 80% of its max rate for
 * `seconds`, with the other core kept busy by a CPU burner (bounded in time),
 * must never change master.
 */
async function loadPhase(rate: number, seconds: number): Promise<LoadPhase> {
  const bed = NetBed.create([
    { name: 'a', octet: 1 },
    { name: 'b', octet: 2 },
    { name: 'client', octet: 10 },
  ]);
  const burner = (await import('node:child_process')).spawn(
    process.execPath,
    ['-e', `const end = Date.now() + ${(seconds + 10) * 1000}; while (Date.now() < end) {}`],
    { stdio: 'ignore' },
  );
  try {
    const [ha, hb, client] = ['a', 'b', 'client'].map((n) => bed.host(n)) as [Host, Host, Host];
    const [a, b] = await startPair(bed, ha, hb, { SIPHA_LOG_LEVEL: 'warn' });
    // Datagrams each host's kernel dropped for a full receive buffer, and which pair socket's: a
    // REGISTER lost there is never counted by the sidecar (sipp retransmits it, and may give up).
    // Read through a live process's /proc/PID/net; a process gone (a crash) reads as null.
    const pidOf = (n: typeof a) => n.sidecar.child.pid as number;
    const rcvbuf = () => [a, b].map((n) => readOrNull(() => udpSnmpOf(pidOf(n)).RcvbufErrors ?? 0));
    // Every pair socket's drops, keyed "a 198.18.0.100:5060" (the form dropsGrown compares).
    const sockets = () =>
      new Map(
        [a, b].flatMap((n, i) =>
          [...(readOrNull(() => udpSocketDrops(pidOf(n))) ?? [])].map(
            ([address, d]) => [`${i === 0 ? 'a' : 'b'} ${address}`, d] as const,
          ),
        ),
      );
    const dropsBefore = rcvbuf();
    const socketsBefore = sockets();
    const clientBefore = udpSnmp(client).RcvbufErrors ?? 0;
    const calls = rate * seconds;
    const r = await runSipp(bed, client, {
      scenario: 'register.xml',
      target: `${VIP}:5060`,
      calls,
      rate,
      limit: rate * 3,
      users: users('load', 20000),
      timeoutS: seconds + 60,
    });
    const [dropsA, dropsB] = rcvbuf().map((v, i) => (v === null ? null : v - (dropsBefore[i] ?? 0))) as [
      number | null,
      number | null,
    ];
    const dropsClient = (udpSnmp(client).RcvbufErrors ?? 0) - clientBefore;
    const socketDrops = dropsGrown(socketsBefore, sockets());
    const achieved = creationRate(statRows(r.statsFile));
    const takeovers = b.sidecar.metric('sipha_takeovers_total') + a.sidecar.metric('sipha_takeovers_total');
    const stillRoles = `${role(a)}/${role(b)}`;
    // How late each side's heartbeat thread ran: ticks that came 50 ms / 100 ms (the detection time) after the one before.
    // One scrape per side (the thread ticks between two scrapes).
    const late = (n: typeof a) => {
      const h = n.sidecar.histogram('sipha_heartbeat_tick_gap_seconds');
      const total = h.at(-1)?.[1] ?? 0;
      const upTo = (le: number) => h.find(([bound]) => bound === le)?.[1] ?? 0;
      return [total - upTo(0.05), total - upTo(0.1)] as const;
    };
    const [[a50, a100], [b50, b100]] = [late(a), late(b)];
    const lateTicks = { a50, a100, b50, b100 };
    console.log(
      `load ${rate}/s for ${seconds} s with a busy core: ${r.successful}/${calls} answered, roles after: ${stillRoles}, takeovers ${takeovers}; heartbeat ticks late by >50 / >100 ms: a ${lateTicks.a50} / ${lateTicks.a100}, b ${lateTicks.b50} / ${lateTicks.b100}`,
    );
    const retransmissions = r.counters['Retransmissions(C)'] ?? 0;
    const timedOut = r.counters['FailedMaxUDPRetrans(C)'] ?? 0;
    console.log(
      `  sipp created ${round(achieved, 1)}/s of ${rate}/s asked, sent ${retransmissions} retransmissions (${round((100 * retransmissions) / calls, 1)} per 100 REGISTERs), ` +
        `gave up on ${timedOut} after its last one, ${calls - r.successful - timedOut} unanswered otherwise; ` +
        `kernel receive-buffer drops: a ${dropsA ?? 'gone'}, b ${dropsB ?? 'gone'}, client ${dropsClient}; by pair socket: ${socketDrops || 'none'}`,
    );
    // A takeover here is a false one: what each sidecar said (warn and up) tells why.
    if (takeovers > 0 || stillRoles !== 'master/backup')
      for (const [name, node] of [
        ['a', a],
        ['b', b],
      ] as const)
        console.log(
          `${name}:\n${node.sidecar
            .output()
            .split('\n')
            .filter((l) => /"level":(40|50|60)/.test(l))
            .slice(-20)
            .join('\n')}`,
        );
    return {
      takeovers: takeovers + (stillRoles === 'master/backup' ? 0 : 1),
      failedPct: round((100 * (calls - r.successful)) / calls, 3),
      achieved: Math.round(achieved),
      lateTicks100: Math.max(lateTicks.a100, lateTicks.b100),
      retransmissions,
      timedOut,
      kernelDropsA: dropsA,
      kernelDropsB: dropsB,
      kernelDropsClient: dropsClient,
      socketDrops,
    };
  } finally {
    burner.kill('SIGKILL');
    await bed.destroy();
  }
}

/** 80% of the pair's max from bench/out/replication.json, when that run was made here. */
function loadRateFromReplication(): number | null {
  try {
    const rep = JSON.parse(readFileSync(fileURLToPath(new URL('./out/replication.json', import.meta.url)), 'utf8')) as {
      pair_register_max_rate?: number;
    };
    if (rep.pair_register_max_rate) return Math.round(rep.pair_register_max_rate * 0.8);
  } catch {
    // no replication figures yet
  }
  return null;
}

interface LoadRate {
  rate: number;
  from: 'option' | 'replication.json' | 'default';
}

function loadRate(): LoadRate {
  if (values['load-rate']) return { rate: Number(values['load-rate']), from: 'option' };
  const measured = loadRateFromReplication();
  return measured === null ? { rate: 3000, from: 'default' } : { rate: measured, from: 'replication.json' };
}

if (values['only-load']) {
  const rate = loadRate();
  const lp = await loadPhase(rate.rate, Number(values['load-seconds']));
  const path = fileURLToPath(new URL('./out/failover.json', import.meta.url));
  // The full run's figures, kept beside this phase's (none yet on a fresh checkout).
  let prev: Figures = {};
  try {
    prev = JSON.parse(readFileSync(path, 'utf8')) as Figures;
  } catch {
    // no full run yet
  }
  writeFigures('failover', { ...prev, ...loadFigures(rate, lp) });
  process.exit(0);
}

const results: Record<string, Trial[]> = {};
for (const fault of (values.faults as string).split(',').filter(Boolean) as Fault[]) {
  for (const system of (values.systems as string).split(',').filter(Boolean) as System[]) {
    const key = `${fault}_${system}`;
    results[key] = [];
    for (let i = 1; i <= TRIALS; i++) {
      const t = await trial(system, fault);
      results[key].push(t);
      console.log(
        `${fault} ${system} trial ${i}/${TRIALS}: gap ${t.gapMs ?? 'never'} ms, regs lost ${t.regsLost}, calls failed ${t.callsFailed ?? '-'}, backup egress ${t.backupEgress ?? '-'}`,
      );
    }
  }
}

const figures: Record<string, number | string | null> = {};
const rows: Array<Array<string | number>> = [];
for (const [key, ts] of Object.entries(results)) {
  const gaps = ts.map((t) => t.gapMs).filter((g): g is number => g !== null);
  const never = ts.length - gaps.length;
  const [fault, ...rest] = key.split(/_(?=sipha|keepalived)/);
  const system = rest.join('_');
  const f = (name: string, v: number | null) => {
    figures[`${fault}_${system}_${name}${SUFFIX}`] = v;
  };
  f('gap_ms_p50', gaps.length ? round(median(gaps), 1) : null);
  f('gap_ms_min', gaps.length ? Math.min(...gaps) : null);
  f('gap_ms_max', gaps.length ? Math.max(...gaps) : null);
  f('regs_lost', Math.max(...ts.map((t) => t.regsLost)));
  if (withCalls(system as System)) {
    f(
      'calls_failed',
      ts.reduce((n, t) => n + (t.callsFailed ?? 0), 0),
    );
    f('calls', CALLS * ts.length);
  }
  if (system === 'sipha')
    f(
      'backup_egress_packets',
      ts.reduce((n, t) => n + (t.backupEgress ?? 0), 0),
    );
  rows.push([
    fault as string,
    system,
    gaps.length ? Math.min(...gaps) : '-',
    gaps.length ? round(median(gaps), 1) : '-',
    gaps.length ? Math.max(...gaps) : '-',
    never,
    Math.max(...ts.map((t) => t.regsLost)),
    withCalls(system as System) ? ts.reduce((n, t) => n + (t.callsFailed ?? 0), 0) : '-',
    system === 'sipha' ? ts.reduce((n, t) => n + (t.backupEgress ?? 0), 0) : '-',
  ]);
}
const streamRows: Array<Array<string | number>> = [];
for (const transport of (values.streams as string).split(',').filter(Boolean) as Array<'tls' | 'tcp'>) {
  const ts: StreamTrial[] = [];
  for (let i = 1; i <= TRIALS; i++) {
    const t = await streamTrial(transport);
    ts.push(t);
    console.log(
      `host_down ${transport} clients trial ${i}/${TRIALS}: gap ${t.gapMs ?? 'never'} ms (TLS probe), regs lost ${t.regsLost}, ` +
        `calls failed ${t.callsFailed}, dialogs stuck ${t.dialogsStuck} of ${t.established}, ` +
        `re-registered within 5 s ${t.reconnectedIn5s} of ${t.lostConnections} (p50 ${t.reRegisterMsP50} ms, never ${t.neverBack})`,
    );
  }
  const gaps = ts.map((t) => t.gapMs).filter((g): g is number => g !== null);
  const sum = (f: (t: StreamTrial) => number) => ts.reduce((n, t) => n + f(t), 0);
  if (transport === 'tls') {
    figures.tls_host_down_gap_ms_p50 = gaps.length ? round(median(gaps), 1) : null;
    figures.tls_host_down_gap_ms_max = gaps.length ? Math.max(...gaps) : null;
  }
  figures[`${transport}_host_down_regs_lost`] = Math.max(...ts.map((t) => t.regsLost));
  figures[`${transport}_host_down_calls_failed`] = sum((t) => t.callsFailed);
  figures[`${transport}_host_down_dialogs_stuck`] = sum((t) => t.dialogsStuck);
  figures[`${transport}_host_down_dialogs`] = sum((t) => t.established);
  figures[`${transport}_host_down_clients_never_back`] = sum((t) => t.neverBack);
  streamRows.push([
    transport,
    gaps.length ? round(median(gaps), 1) : '-',
    gaps.length ? Math.max(...gaps) : '-',
    Math.max(...ts.map((t) => t.regsLost)),
    sum((t) => t.callsFailed),
    `${sum((t) => t.dialogsStuck)} of ${sum((t) => t.established)}`,
    `${sum((t) => t.reconnectedIn5s)} of ${sum((t) => t.lostConnections)}`,
  ]);
}
if (streamRows.length)
  table(
    `host_down with TCP/TLS clients (sipha, ${TRIALS} trials; 200 clients on their own connections, 100 calls; clients reconnect 1-4 s after their connection died; the far end then hangs up every call)`,
    [
      'clients',
      'gap p50 (TLS probe)',
      'gap max',
      'regs lost (of 200)',
      'calls failed',
      'dialogs stuck',
      're-registered within 5 s',
    ],
    streamRows,
  );
// The keys the issue names, with keepalived meaning its default setting.
// (The keys the issue names are written whenever their system ran; a narrowed --merge run keeps the others.)
if (!values['skip-load']) {
  const rate = loadRate();
  const lp = await loadPhase(rate.rate, Number(values['load-seconds']));
  Object.assign(figures, loadFigures(rate, lp));
}
table(
  `failover: sipha vs keepalived on the same bed (${TRIALS} trials each; gap = fault -> first OPTIONS answered via the VIP, 10 ms prober; sipha: ${CALLS} calls per trial at ${CALL_RATE}/s, ${HOLD_MS} ms hold)`,
  ['fault', 'system', 'gap min', 'gap p50', 'gap max', 'no answer', 'regs lost (of 1000)', 'calls failed', 'backup egress'],
  rows,
);
const previous = values.merge
  ? (JSON.parse(readFileSync(fileURLToPath(new URL('./out/failover.json', import.meta.url)), 'utf8')) as Record<string, unknown>)
  : {};
writeFigures('failover', {
  ...previous,
  ...figures,
  [`trials${SUFFIX}`]: TRIALS,
  ...(SUFFIX ? { [`call_hold_ms${SUFFIX}`]: HOLD_MS } : {}),
  keepalived_fast_advert_s: FASTEST_ADVERT_S,
  sipha_heartbeat: '20 ms x 5 misses (defaults)',
});
