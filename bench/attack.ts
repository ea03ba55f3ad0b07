/**
 * npm run bench -- attack   [--quick] [--only tcp]
 *
 * Hostile input against a serving pair (issue 9), on the netns bed with real
 * Kamailio and real sidecar processes; the attacker sits on the client host
 * (.10), a legitimate sipp client on the uas host (.20). Each attack is
 * watched by a sampler of both sidecars' roles (every 100 ms) and by their
 * own "role change" log lines and sipha_takeovers_total:
 *   hb_replay:      recorded beats of the master's earlier start (master,
 *                   resigned, backup) replayed into the backup;
 *   stream_replay:  a recorded replication stream (HELLO, REGISTERs of 50
 *                   users since removed) replayed into the backup;
 *   hb_flood:       the backup's UDP heartbeat port flooded as fast as one
 *                   sender process goes (udp-flood.c, sendmmsg), with recorded
 *                   authentic beats (every one costs an HMAC and a freshness
 *                   check); then a ladder of rates with the replication port
 *                   flooded too (connections of random bytes): "both paths";
 *   tcp_flood:      the master's public port: 50k connection attempts, 1k
 *                   slowloris, a client that never reads, and one connection
 *                   pumping OPTIONS as fast as it goes; the master sidecar's
 *                   RSS, takeovers, and a legitimate client's REGISTER times;
 *   probe_poison:   requests whose branch starts with the hung-server probe's
 *                   prefix, then the master's Kamailio stopped (SIGSTOP): the
 *                   time to the backup serving, beside the same stop without them;
 *   rejected_register: (a second bed, Kamailio with -A WITH_AUTH) REGISTERs
 *                   with fresh Call-IDs, all answered 401, for up to 120 s:
 *                   what the state caches keep.
 * Baselines in the same run: the idle REGISTER times, role changes in an idle
 * window, the idle RSS, the probe stop without crafted branches.
 * Keys: bench/out/attack.json (see docs/benchmarks.md "## attack"). With
 * `--only tcp` only the idle baseline and the public-TCP attacks run, and their
 * keys are merged into the attack.json already there (the other attacks' keys
 * stay as their last full run left them, dated by `full_run_measured_at`).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readSip, startCapture, transactionLatenciesUs } from '../test/lib/capture.ts';
import { lookupAll } from '../test/lib/kamailio.ts';
import type { Host, NetBed } from '../test/lib/netbed.ts';
import { type PairNode, pairBed, role, roleStory, VIP } from '../test/lib/pair.ts';
import { sleep, until } from '../test/lib/procs.ts';
import { MetricAbsentError } from '../test/lib/prom-text.ts';
import { runSipp, users } from '../test/lib/sipp.ts';
import {
  buildUdpFlood,
  dropsByReason,
  dropsGrown,
  memoryMib,
  runIn,
  sampleRoles,
  softnetDrops,
  tapLogs,
  tcpAttack,
  tcpRetransmits,
  tcpStream,
  udpFlood,
  udpPayloads,
  udpSnmp,
} from './lib/hostile.ts';
import { type Figures, percentile, round, table, writeFigures } from './lib/report.ts';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, only: { type: 'string' } },
});
const QUICK = values.quick;
if (values.only !== undefined && values.only !== 'tcp') throw new Error(`--only ${values.only}: only "tcp" is known`);
/** Only the public-TCP attacks (and the idle baseline they are compared with). */
const TCP_ONLY = values.only === 'tcp';
const T = {
  legitS: QUICK ? 5 : 20,
  oneFloodS: QUICK ? 5 : 20,
  rungS: QUICK ? 3 : 8,
  tcpFloodS: QUICK ? 15 : 45,
  tcpAttempts: QUICK ? 10_000 : 50_000,
  pumpCount: QUICK ? 300_000 : 3_000_000,
  rejectS: QUICK ? 10 : 120,
};
const LEGIT_RATE = 50;
const REJECT_RATE = 3000;
/** Ladder rungs: datagrams/s asked of each sender (0: as fast as it goes), and senders. */
const RUNGS: Array<{ rate: number; senders: number }> = QUICK
  ? [
      { rate: 20_000, senders: 1 },
      { rate: 0, senders: 2 },
    ]
  : [
      { rate: 10_000, senders: 1 },
      { rate: 30_000, senders: 1 },
      { rate: 100_000, senders: 1 },
      { rate: 300_000, senders: 1 },
      { rate: 0, senders: 1 },
      { rate: 0, senders: 2 },
    ];
const HB_PORT = 5062;
const REPL_PORT = 5063;
const TARGET = `${VIP}:5060`;

const figures: Figures = { quick: QUICK };
/** attack | baseline (idle, this run) | under attack | target */
const rows: Array<Array<string | number>> = [];

const pidOf = (n: PairNode) => n.sidecar.child.pid as number;
const switchover = (n: PairNode) => n.host.run('curl', ['-s', '-m', '10', '-X', 'POST', 'http://127.0.0.1:9090/switchover']);

/** A counter read before an attack: a labelled counter has no series until its first count, which is 0. */
function counterBefore(n: PairNode, name: string, labels: Record<string, string> = {}): number {
  try {
    return n.sidecar.metric(name, labels);
  } catch (err) {
    if (err instanceof MetricAbsentError) return 0;
    throw err;
  }
}

/**
 * REGISTERs from the legitimate client (LEGIT_RATE/s for `seconds`), timed on
 * its own wire (tcpdump's kernel timestamps, request -> final response). Not
 * sipp's -trace_rtt: at 50/s sipp sleeps between calls and its response times
 * come out in steps of its own wake-ups (24-60 ms for sub-millisecond answers).
 */
async function legitRegisters(bed: NetBed, host: Host, seconds: number, tag: string) {
  const calls = LEGIT_RATE * seconds;
  const cap = await startCapture(bed, host, `udp and host ${host.ip} and port 5060`);
  const r = await runSipp(bed, host, {
    scenario: 'register.xml',
    target: TARGET,
    calls,
    rate: LEGIT_RATE,
    users: users(tag, calls),
    timeoutS: seconds + 30,
  });
  const ms = transactionLatenciesUs(readSip(await cap.stop()), host.ip, 'REGISTER').map((us) => us / 1000);
  if (ms.length === 0) throw new Error(`no REGISTER answered on the wire (${tag}): ${r.errors.slice(0, 500)}`);
  return { p99: percentile(ms, 99), max: Math.max(...ms), n: ms.length, failed: r.failed };
}

/** What the sidecars log that an attack's report needs: role changes, losses, hangs, the server link. */
const EVENTS = /role change|peer heartbeats lost|main thread|link to the SIP server closed|stopped answering|key mismatch/;

/** A log line in short: message, from->to, reason, silence. */
function brief(line: string): string {
  try {
    const j = JSON.parse(line) as { msg: string; reason?: string; from?: string; to?: string; silentMs?: number };
    return [j.msg, j.from && j.to && `${j.from}->${j.to}`, j.reason, j.silentMs && `${j.silentMs} ms`].filter(Boolean).join(' ');
  } catch {
    return line.slice(0, 120);
  }
}

/** Watches both sidecars while `attack` runs (and `settleMs` after): role changes sampled and logged, takeovers, losses. */
async function watched<R>(nodes: PairNode[], attack: () => Promise<R>, settleMs = 1000) {
  const before = nodes.map((n) => ({
    takeovers: n.sidecar.metric('sipha_takeovers_total'),
    mismatch: n.sidecar.metric('sipha_key_mismatches_total'),
  }));
  const logs = tapLogs(nodes, EVENTS);
  const softnet0 = softnetDrops();
  const retrans0 = nodes.map((n) => tcpRetransmits(n.host));
  const sampler = sampleRoles(nodes);
  const result = await attack();
  await sleep(settleMs);
  const sampled = await sampler.stop();
  const lines = logs.stop();
  // The kernel's side: input backlogs that overflowed (host-wide), and the pair's own TCP retransmissions.
  const softnet = softnetDrops() - softnet0;
  const retransmits = nodes.reduce((sum, n, i) => sum + tcpRetransmits(n.host) - (retrans0[i] as number), 0);
  let takeovers = 0;
  let mismatches = 0;
  nodes.forEach((n, i) => {
    const b = before[i] as (typeof before)[number];
    takeovers += n.sidecar.metric('sipha_takeovers_total') - b.takeovers;
    mismatches += n.sidecar.metric('sipha_key_mismatches_total') - b.mismatch;
  });
  const all = lines.flat();
  const logged = all.filter((l) => l.includes('role change')).length;
  const peerLost = all.filter((l) => l.includes('peer heartbeats lost')).length;
  // The larger of the two counts: sampling can miss a quick flap, a log line is written once per change.
  const roleChanges = Math.max(sampled.changes, logged);
  if (sampled.changes !== logged) console.log(`  (sampled ${sampled.changes} role changes, logged ${logged})`);
  const events = lines.flatMap((ls, i) => ls.map((l) => `${nodes[i]?.host.name}: ${brief(l)}`));
  if (softnet > 0 || retransmits > 0) events.push(`kernel: ${softnet} backlog drops, ${retransmits} pair TCP retransmits`);
  return { result, roleChanges, takeovers, peerLost, mismatches, missedSamples: sampled.missed, events, softnet, retransmits };
}

/** Keeps what the sidecars logged during an attack (role changes and their reasons) beside its figures. */
function keepEvents(key: string, w: { events: string[] }): void {
  if (w.events.length === 0) return;
  figures[`${key}_events`] = w.events.join('; ');
  console.log(`  ${key}: ${w.events.join('; ')}`);
}

/** The pair's nodes as [master, backup] once it has exactly one of each (and the backup is in sync). */
async function settled(x: PairNode, y: PairNode, ms = 20_000): Promise<[PairNode, PairNode]> {
  await until(
    () => {
      const roles = [role(x), role(y)].sort().join(',');
      if (roles !== 'backup,master') return false;
      const backup = role(x) === 'backup' ? x : y;
      return backup.sidecar.metric('sipha_in_sync') === 1;
    },
    ms,
    'one master and an in-sync backup',
    () => roleStory(x, y),
  );
  return role(x) === 'master' ? [x, y] : [y, x];
}

const flooder = buildUdpFlood();
try {
  await pairAttacks();
  if (!TCP_ONLY) await rejectedRegisters();
} finally {
  flooder.remove();
}

table(
  `attack: hostile input against a serving pair${QUICK ? ' (--quick)' : ''}${TCP_ONLY ? ' (--only tcp)' : ''} (netns bed, real Kamailio and sidecars)`,
  ['attack', 'baseline (idle, this run)', 'under attack', 'target'],
  rows,
);
if (TCP_ONLY) {
  // Merged over the last full run's keys, so that attack.json still holds every attack.
  const path = fileURLToPath(new URL('./out/attack.json', import.meta.url));
  const last = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Figures) : {};
  const { measured_at: _, ...kept } = last;
  const fullRun = last.full_run_measured_at ?? last.measured_at ?? null;
  writeFigures('attack', { ...kept, ...figures, full_run_measured_at: fullRun });
} else writeFigures('attack', figures);

async function pairAttacks(): Promise<void> {
  const pb = await pairBed();
  const { bed, client, uas } = pb;
  let a = pb.a;
  let b = pb.b;
  try {
    // Baselines: the legitimate client's REGISTER times and the roles in an idle window.
    const idleRss = memoryMib(pidOf(a)).rss;
    const idle = await watched([a, b], () => legitRegisters(bed, uas, T.legitS, 'idle'));
    const idleLegit = idle.result;
    figures.idle_role_changes = idle.roleChanges;
    keepEvents('idle', idle);
    figures.idle_register_p99_ms = round(idleLegit.p99, 3);
    figures.idle_register_samples = idleLegit.n;
    console.log(`idle: REGISTER p99 ${round(idleLegit.p99, 3)} ms of ${idleLegit.n}, ${idle.roleChanges} role changes`);

    // The other attacks (1-4, 6) are skipped by --only tcp.
    if (!TCP_ONLY) {
      // 1. Recorded heartbeats of a's first start (master, resigned, backup), replayed after a restart.
      const cap = await startCapture(bed, a.host, `udp and src host ${a.host.ip} and dst port ${HB_PORT}`);
      await sleep(300);
      switchover(a);
      await until(() => role(a) === 'backup' && role(b) === 'master', 5000, 'b took over, a rejoined');
      await sleep(300);
      const recorded = udpPayloads(await cap.stop(), HB_PORT);
      if (recorded.length < 20) throw new Error(`recorded only ${recorded.length} beats`);
      await bed.stop(a.sidecar.child, 'SIGTERM');
      a = await a.restartSidecar();
      await until(() => role(a) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10_000, 'a rejoined in sync');
      switchover(b);
      await until(() => role(a) === 'master' && role(b) === 'backup', 5000, 'a is master again');
      await sleep(500);
      const replay = await watched([a, b], () =>
        runIn(client, process.execPath, [
          '-e',
          `const s = require('node:dgram').createSocket('udp4');
         const p = JSON.parse(process.argv[1]);
         let i = 0;
         const t = setInterval(() => {
           if (i >= p.length * 2) { clearInterval(t); s.close(); return; }
           s.send(Buffer.from(p[i++ % p.length], 'hex'), ${HB_PORT}, '${b.host.ip}');
         }, 5);`,
          JSON.stringify(recorded),
        ]),
      );
      figures.hb_replay_role_changes = replay.roleChanges;
      keepEvents('hb_replay', replay);
      figures.hb_replay_beats = recorded.length * 2;
      figures.hb_replay_takeovers = replay.takeovers;
      rows.push([
        `recorded heartbeats replayed (${recorded.length * 2} beats of an earlier start)`,
        `${idle.roleChanges} role changes`,
        `${replay.roleChanges} role changes, ${replay.takeovers} takeovers`,
        '0',
      ]);

      // 2. A recorded replication stream (from its HELLO) replayed into the backup.
      const streamCap = await startCapture(bed, b.host, `tcp and dst port ${REPL_PORT}`);
      await bed.stop(b.sidecar.child, 'SIGTERM');
      b = await b.restartSidecar();
      await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10_000, 'b rejoined in sync');
      const aors = users('old', 50);
      const reg = await runSipp(bed, client, { scenario: 'register.xml', target: TARGET, calls: 50, rate: 100, users: aors });
      if (reg.successful !== 50) throw new Error(`registered ${reg.successful} of 50: ${reg.errors}`);
      await until(() => lookupAll(b.kamailio, aors).size === 50, 5000, 'the backup holds the 50');
      const stream = tcpStream(await streamCap.stop(), REPL_PORT);
      for (const n of [a, b]) n.kamailio.kamcmd([], `${aors.map((u) => `ul.rm location ${u}`).join('\n')}\n`);
      if (lookupAll(b.kamailio, aors).size !== 0) throw new Error('the 50 were not removed');
      const resyncs = a.sidecar.metric('sipha_replication_resyncs_total');
      const streamFile = join(bed.subdir('recorded'), 'stream.bin');
      writeFileSync(streamFile, stream);
      const streamReplay = await watched([a, b], () =>
        runIn(client, process.execPath, [
          '-e',
          `const bytes = require('node:fs').readFileSync(process.argv[1]);
         const s = require('node:net').connect(${REPL_PORT}, '${b.host.ip}', () => s.end(bytes));
         s.on('data', () => {}); s.on('error', () => {}); s.on('close', () => process.exit(0));
         setTimeout(() => process.exit(0), 3000);`,
          streamFile,
        ]),
      );
      const resurrected = lookupAll(b.kamailio, aors).size;
      figures.stream_replay_role_changes = streamReplay.roleChanges;
      keepEvents('stream_replay', streamReplay);
      figures.stream_replay_registrations_resurrected = resurrected;
      figures.stream_replay_bytes = stream.length;
      figures.stream_replay_resyncs = a.sidecar.metric('sipha_replication_resyncs_total') - resyncs;
      rows.push([
        `recorded replication stream replayed (${stream.length.toLocaleString('en-US')} bytes, 50 removed users)`,
        `${idle.roleChanges} role changes`,
        `${streamReplay.roleChanges} role changes, ${resurrected} of 50 registrations back, ${figures.stream_replay_resyncs} resyncs`,
        '0, 0',
      ]);

      // 3. The backup's UDP heartbeat port flooded as fast as one sender goes (recorded authentic beats).
      const payloads = recorded.map((h) => Buffer.from(h, 'hex'));
      [a, b] = await settled(a, b);
      const dropsBefore = counterBefore(b, 'sipha_heartbeats_dropped_total');
      const heardBefore = {
        udp: counterBefore(b, 'sipha_heartbeats_heard_total', { path: 'udp' }),
        stream: counterBefore(b, 'sipha_heartbeats_heard_total', { path: 'stream' }),
      };
      const snmpBefore = udpSnmp(b.host);
      const backup = b;
      const one = await watched([a, b], () =>
        udpFlood(client, flooder.bin, {
          target: backup.host.ip,
          port: HB_PORT,
          rate: 0,
          maxCount: 100_000_000,
          maxSeconds: T.oneFloodS,
          payloads,
        }),
      );
      const snmpAfter = udpSnmp(b.host);
      const processed = b.sidecar.metric('sipha_heartbeats_dropped_total') - dropsBefore;
      const heardUdp = b.sidecar.metric('sipha_heartbeats_heard_total', { path: 'udp' }) - heardBefore.udp;
      const heardStream = b.sidecar.metric('sipha_heartbeats_heard_total', { path: 'stream' }) - heardBefore.stream;
      const floodS = one.result.elapsedMs / 1000;
      figures.hb_flood_one_path_takeovers = one.takeovers;
      keepEvents('hb_flood_one_path', one);
      figures.hb_flood_one_path_role_changes = one.roleChanges;
      figures.hb_flood_one_path_sent = one.result.sent;
      figures.hb_flood_one_path_rate_per_s = Math.round(one.result.rate);
      figures.hb_flood_one_path_judged_per_s = Math.round(processed / floodS);
      figures.hb_flood_one_path_kernel_drops = (snmpAfter.RcvbufErrors ?? 0) - (snmpBefore.RcvbufErrors ?? 0);
      figures.hb_flood_one_path_beats_heard_udp = heardUdp;
      figures.hb_flood_one_path_beats_heard_stream = heardStream;
      figures.hb_flood_one_path_peer_lost = one.peerLost;
      rows.push([
        `UDP heartbeat port of the backup flooded, one sender (${Math.round(one.result.rate).toLocaleString('en-US')}/s sent, ${Math.round(processed / floodS).toLocaleString('en-US')}/s judged, ${round(floodS, 1)} s)`,
        `${idle.takeovers} takeovers`,
        `${one.takeovers} takeovers, ${one.peerLost} peer-lost; beats heard: ${heardUdp} by UDP, ${heardStream} by the stream`,
        '0',
      ]);

      // 4. Both paths: the UDP heartbeat port at rising rates, the replication port flooded with connections.
      let detectedAt: string | null = null;
      let topRate = 0;
      let after = '';
      for (const rung of RUNGS) {
        [a, b] = await settled(a, b);
        const bk = b;
        const dBefore = counterBefore(bk, 'sipha_heartbeats_dropped_total');
        const sBefore = counterBefore(bk, 'sipha_heartbeats_heard_total', { path: 'stream' });
        const w = await watched([a, b], () =>
          Promise.all([
            tcpAttack(client, 'garbage', bk.host.ip, REPL_PORT, T.rungS, 10_000_000),
            ...Array.from({ length: rung.senders }, () =>
              udpFlood(client, flooder.bin, {
                target: bk.host.ip,
                port: HB_PORT,
                rate: rung.rate,
                maxCount: 100_000_000,
                maxSeconds: T.rungS,
                payloads,
              }),
            ),
          ]),
        );
        const [garbage, ...floods] = w.result;
        const rate = floods.reduce((s, f) => s + f.rate, 0);
        const judged = (counterBefore(bk, 'sipha_heartbeats_dropped_total') - dBefore) / T.rungS;
        const streamBeats = counterBefore(bk, 'sipha_heartbeats_heard_total', { path: 'stream' }) - sBefore;
        topRate = Math.max(topRate, rate);
        const fired = w.roleChanges + w.takeovers + w.peerLost + w.mismatches > 0;
        const asked = rung.rate === 0 ? `max x${rung.senders}` : `${rung.rate.toLocaleString('en-US')}/s`;
        console.log(
          `  both paths, asked ${asked}: sent ${Math.round(rate)}/s, judged ${Math.round(judged)}/s, stream beats ${streamBeats}, ` +
            `garbage connections ${garbage?.attempts}; role changes ${w.roleChanges}, takeovers ${w.takeovers}, peer-lost ${w.peerLost}, key mismatches ${w.mismatches}`,
        );
        const key = `hb_flood_both_${rung.rate === 0 ? `max${rung.senders}` : rung.rate}`;
        figures[`${key}_sent_per_s`] = Math.round(rate);
        figures[`${key}_judged_per_s`] = Math.round(judged);
        figures[`${key}_stream_beats`] = streamBeats;
        figures[`${key}_softnet_drops`] = w.softnet;
        if (w.events.length > 0) figures[`${key}_events`] = w.events.join('; ');
        if (fired) {
          detectedAt = String(Math.round(rate));
          after = `at ${Math.round(rate).toLocaleString('en-US')}/s: ${w.roleChanges} role changes, ${w.takeovers} takeovers, ${w.peerLost} peer-lost, ${w.mismatches} key mismatches; ${w.events.join('; ')}`;
          break;
        }
      }
      figures.hb_flood_detect_rate = detectedAt ?? `>=${Math.round(topRate)}`;
      figures.hb_flood_ladder_top_per_s = Math.round(topRate);
      if (detectedAt !== null) {
        // What the pair does next: back to one master and an in-sync backup?
        const t0 = Date.now();
        try {
          [a, b] = await settled(a, b, 30_000);
          figures.hb_flood_recovered_ms = Date.now() - t0;
        } catch {
          figures.hb_flood_recovered_ms = null;
        }
        figures.hb_flood_detect_story = after;
      }
      rows.push([
        'both paths: UDP heartbeat port (ladder) + replication port (connections of random bytes)',
        'no detection',
        detectedAt === null
          ? `no detection up to ${Math.round(topRate).toLocaleString('en-US')}/s (top rung)`
          : `first detection ${after.split(';')[0]}`,
        'none below the host limit',
      ]);
    }

    // 5. TCP at the master's public port, with a legitimate client registering meanwhile.
    // The attacker's host resets its connections and reuses ports: 50k attempts fit its port range.
    client.run('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65000']);
    client.run('sysctl', ['-qw', 'net.ipv4.tcp_tw_reuse=1']);
    // Two parts, so that what happens is told apart: the many-connection attack, then the one pump.
    let peakRss = 0;
    let hwm = 0;
    let takeovers = 0;
    let changes = 0;
    let worstRatio = 0;
    const detail: string[] = [];
    for (const part of ['edge', 'pump'] as const) {
      [a, b] = await settled(a, b);
      const mpid = pidOf(a);
      let partRss = memoryMib(mpid).rss;
      const rssTimer = setInterval(() => {
        try {
          partRss = Math.max(partRss, memoryMib(mpid).rss);
        } catch {
          // gone: memoryMib below throws
        }
      }, 200);
      const dropsBefore = dropsByReason(a);
      // The window, for memory samples taken inside the sidecar (bench/lib/memory-sampler.ts).
      console.log(`  tcp ${part}: master pid ${mpid}, from ${Date.now()}`);
      const w = await watched([a, b], () =>
        Promise.all([
          tcpAttack(client, part, VIP, 5060, T.tcpFloodS, part === 'edge' ? T.tcpAttempts : T.pumpCount),
          legitRegisters(bed, uas, Math.max(5, T.tcpFloodS - 5), `busy${part}`),
        ]),
      );
      clearInterval(rssTimer);
      console.log(`  tcp ${part}: until ${Date.now()}`);
      const mem = memoryMib(mpid);
      partRss = Math.max(partRss, mem.rss);
      peakRss = Math.max(peakRss, partRss);
      hwm = Math.max(hwm, mem.hwm);
      const drops = dropsGrown(dropsBefore, dropsByReason(a));
      figures[`tcp_${part}_rss_mib`] = round(partRss, 1);
      figures[`tcp_${part}_master_drops`] = drops;
      const [counters, busy] = w.result;
      const ratio = busy.p99 / idleLegit.p99;
      worstRatio = Math.max(worstRatio, ratio);
      takeovers += w.takeovers;
      changes += w.roleChanges;
      // Why a role changed, in the sidecars' own words.
      const reasons = w.events;
      figures[`tcp_${part}_takeovers`] = w.takeovers;
      figures[`tcp_${part}_role_changes`] = w.roleChanges;
      figures[`tcp_${part}_register_p99_ms`] = round(busy.p99, 3);
      figures[`tcp_${part}_register_samples`] = busy.n;
      figures[`tcp_${part}_register_failed`] = busy.failed;
      for (const [k, v] of Object.entries(counters)) figures[`tcp_${part}_${k}`] = v;
      if (reasons.length > 0) figures[`tcp_${part}_events`] = reasons.join('; ');
      console.log(
        `  tcp ${part}: ${JSON.stringify(counters)}; peak RSS ${round(partRss, 1)} MiB; ${w.takeovers} takeovers; ` +
          `master drops: ${drops || 'none'}; events: ${reasons.join('; ') || 'none'}`,
      );
      const what =
        part === 'edge'
          ? `${counters.attempts} connection attempts (${counters.answered} answered), 1k slowloris (${counters.slowloris_closed_by_server} closed by the sidecar), a never-reader (${counters.never_reader_cut ? 'cut off' : 'not cut'})`
          : `one connection pumping OPTIONS (reads its replies): ${counters.sent} sent${counters.closed_by_server ? ', then closed by the far end' : ''}`;
      detail.push(what);
      rows.push([
        `TCP at the master's public port: ${what}`,
        `RSS ${round(idleRss, 1)} MiB; REGISTER p99 ${round(idleLegit.p99, 2)} ms of ${idleLegit.n}`,
        `peak RSS ${round(partRss, 1)} MiB, ${w.takeovers} takeovers, ${w.roleChanges} role changes; REGISTER p99 ${round(busy.p99, 2)} ms of ${busy.n} (x${round(ratio, 1)}), ${busy.failed} failed`,
        '0 takeovers; ratio <= 2',
      ]);
    }
    figures.idle_rss_mib = round(idleRss, 1);
    figures.tcp_flood_rss_mib = round(peakRss, 1);
    figures.tcp_flood_hwm_mib = round(hwm, 1);
    figures.tcp_flood_takeovers = takeovers;
    figures.tcp_flood_role_changes = changes;
    figures.legit_register_p99_ratio = round(worstRatio, 2);
    rows.push([
      "TCP at the master's public port: the master sidecar's memory",
      `RSS ${round(idleRss, 1)} MiB`,
      `peak RSS ${round(peakRss, 1)} MiB (sampled every 200 ms; VmHWM ${round(hwm, 1)})`,
      'bounded',
    ]);

    if (TCP_ONLY) return;
    // 6. The hung-server probe: a stop without crafted branches (baseline), then with them.
    [a, b] = await settled(a, b);
    const base = await stopServer(a, b);
    [a, b] = await settled(a, b, 30_000);
    const poison = await stopServer(a, b, client);
    figures.probe_poison_detect_ms = poison.detectMs;
    figures.probe_poison_takeover_ms = poison.takeoverMs;
    figures.probe_baseline_detect_ms = base.detectMs;
    figures.probe_baseline_takeover_ms = base.takeoverMs;
    rows.push([
      "crafted probe branches, then the master's Kamailio stopped (SIGSTOP)",
      `server down after ${base.detectMs} ms, backup serving after ${base.takeoverMs} ms`,
      `server down after ${poison.detectMs} ms, backup serving after ${poison.takeoverMs} ms`,
      'detection fires',
    ]);
  } finally {
    await bed.destroy();
  }
}

/**
 * Stops the master's Kamailio (SIGSTOP: alive, holding its sockets, answering
 * nothing) and times the master's "stopped answering" log line and the backup
 * serving; with `poisonFrom`, 200 requests with probe-like branches go first
 * (and go on during the stop). The stopped Kamailio is resumed after.
 */
async function stopServer(master: PairNode, backup: PairNode, poisonFrom?: Host) {
  let poisoning: Promise<string> | null = null;
  if (poisonFrom) {
    poisoning = runIn(poisonFrom, process.execPath, [
      '-e',
      `const s = require('node:dgram').createSocket('udp4');
       const tok = require('node:crypto').randomBytes(12).toString('hex');
       let i = 0;
       const t = setInterval(() => {
         if (i >= 500) { clearInterval(t); s.close(); return; }
         const m = 'OPTIONS sip:${VIP} SIP/2.0\\r\\nVia: SIP/2.0/UDP ${poisonFrom.ip}:5099;branch=z9hG4bK-sipha-probe-' + tok + '-' + (i % 10) +
           '\\r\\nFrom: <sip:p@x>;tag=' + i + '\\r\\nTo: <sip:${VIP}>\\r\\nCall-ID: poison' + i + '\\r\\nCSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n';
         s.send(m, 5060, '${VIP}'); i++;
       }, 10);`,
    ]);
    await sleep(2000);
  }
  const kpid = master.kamailio.child.pid as number;
  const tap = tapLogs([master], /SIP server stopped answering OPTIONS/);
  const t0 = Date.now();
  process.kill(-kpid, 'SIGSTOP');
  try {
    await until(
      () => role(backup) === 'master',
      20_000,
      'the backup serves',
      () => roleStory(master, backup),
    );
    const takeoverMs = Date.now() - t0;
    await sleep(300); // the master's log line may land just after the backup serves
    const line = tap.stop()[0]?.[0];
    const detectMs = line ? (JSON.parse(line) as { time: number }).time - t0 : null;
    if (detectMs === null)
      console.log(`  no "stopped answering" line; the master's last lines:\n${master.sidecar.output().slice(-1500)}`);
    return { detectMs, takeoverMs };
  } finally {
    process.kill(-kpid, 'SIGCONT');
    await poisoning;
  }
}

async function rejectedRegisters(): Promise<void> {
  const kamailio = {
    defines: ['WITH_AUTH'],
    env: { SIPHA_AUTH_PASSWORD: 'demo-password', SIPHA_AUTH_SECRET: 'pair-shared-secret' },
  };
  const pb = await pairBed({}, { kamailio });
  const { bed, a, b, client } = pb;
  try {
    const calls = REJECT_RATE * T.rejectS;
    const w = await watched([a, b], () =>
      runSipp(bed, client, {
        scenario: 'register.xml',
        target: TARGET,
        calls,
        rate: REJECT_RATE,
        limit: 5000,
        users: users('x', 5000),
        timeoutS: T.rejectS + 30,
      }),
    );
    const r = w.result;
    await sleep(1000);
    let entries = 0;
    for (const n of [a, b])
      for (const kind of ['registrations', 'pending']) entries += n.sidecar.metric('sipha_state_cache_entries', { kind });
    const sent = r.counters['OutgoingCall(C)'];
    const rejected = r.counters['FailedUnexpectedMessage(C)'];
    if (sent === undefined || rejected === undefined)
      throw new Error(`sipp's counters lack OutgoingCall/FailedUnexpectedMessage: ${Object.keys(r.counters)}`);
    figures.rejected_register_cache_entries = entries;
    figures.rejected_register_sent = sent;
    figures.rejected_register_401 = rejected;
    figures.rejected_register_accepted = r.successful;
    figures.rejected_register_rate_per_s = Math.round(r.callRate);
    figures.rejected_register_role_changes = w.roleChanges;
    figures.rejected_register_takeovers = w.takeovers;
    keepEvents('rejected_register', w);
    rows.push([
      `REGISTERs with fresh Call-IDs answered 401 (${sent.toLocaleString('en-US')} sent by sipp at ${Math.round(r.callRate)}/s)`,
      '0 entries',
      `${entries} cache entries (both sidecars), ${rejected.toLocaleString('en-US')} unexpected-message (401) per sipp, ${w.roleChanges} role changes`,
      '0',
    ]);
  } finally {
    await bed.destroy();
  }
}
