/**
 * npm run bench -- scale   [--users N] [--skip-direct (a development run: no baseline)]
 *
 * 100,000 registrations on the pair (issue 9), on the netns bed with real
 * Kamailio and sidecars:
 *   - both Kamailios hold them (the backup through replication);
 *   - each sidecar's RSS with them cached (/proc VmRSS);
 *   - the backup killed (both processes) and restarted empty: the time until
 *     its Kamailio holds them all again (process start, the burst, the writes),
 *     and the burst alone (stream up -> in sync, the master's view: every
 *     frame acked, i.e. written to the backup's Kamailio link; storing follows);
 *   - then the master's Kamailio killed: registrations the new master holds.
 * Baseline in the same run: the same REGISTERs sent by sipp straight to one
 * Kamailio (no sidecar), at the highest rate it answers them all (sipp's own
 * counters): how fast Kamailio itself takes them. Anchor: Kamailio's dmq_usrloc
 * documents ~20k contacts/s for its own sync.
 *
 * Keys (bench/out/scale.json): resync_100k_s (restart -> the backup's Kamailio holds
 * them all; split: resync_start_s, resync_join_s, store_100k_s, with burst_100k_s inside the last), sidecar_rss_mib_100k,
 * backup_sidecar_rss_mib_100k, sidecar_rss_mib_idle, regs_lost_100k, registered_on_backup_100k,
 * backup_cache_after_resync_100k (what the resynced backup would replay once master),
 * direct_register_100k_s, pair_register_100k_s, pair_register_rate_per_s, baseline_skipped (1: --skip-direct).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startKamailio, usrlocStat } from '../test/lib/kamailio.ts';
import { NetBed } from '../test/lib/netbed.ts';
import { PAIR_BED_HOSTS, type PairNode, role, startPair, VIP } from '../test/lib/pair.ts';
import { until } from '../test/lib/procs.ts';
import { logLines } from '../test/lib/sidecar.ts';
import { runSipp, users } from '../test/lib/sipp.ts';
import { round, table, writeFigures } from './lib/report.ts';

const { values } = parseArgs({
  options: { users: { type: 'string', default: '100000' }, 'skip-direct': { type: 'boolean', default: false } },
});
const N = Number(values.users);
const USERS = users('s', N);
const RATE = 4000;

/** Resident memory of a process, MiB. */
function rssMib(pid: number | undefined): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024, 1) : Number.NaN;
}

const registered = (n: PairNode) => usrlocStat(n.kamailio, 'registered_users');

/** What a timed-out wait prints: both servers' and caches' counts, resyncs, the sidecars' last warnings. */
function explainPair(a: PairNode, b: PairNode): string {
  const safe = (f: () => number) => {
    try {
      return f();
    } catch {
      return Number.NaN;
    }
  };
  const cache = (n: PairNode) => safe(() => n.sidecar.metric('sipha_state_cache_entries', { kind: 'registrations' }));
  const warnings = (n: PairNode) =>
    n.sidecar
      .output()
      .split('\n')
      .filter((l) => /"level":(40|50|60)/.test(l))
      .slice(-8)
      .join('\n');
  return (
    `Kamailio holds: master ${safe(() => registered(a))}, backup ${safe(() => registered(b))}; ` +
    `caches: master ${cache(a)}, backup ${cache(b)}; ` +
    `resyncs ${safe(() => a.sidecar.metric('sipha_replication_resyncs_total'))}\n` +
    `master warnings:\n${warnings(a)}\nbackup warnings:\n${warnings(b)}`
  );
}

const figures: Record<string, number | string | null> = {};
const rows: Array<Array<string | number>> = [];

// Baseline: one Kamailio, no sidecar, the REGISTERs straight from sipp.
if (!values['skip-direct']) {
  const bed = NetBed.create([
    { name: 'k', octet: 1 },
    { name: 'client', octet: 10 },
  ]);
  try {
    const k = bed.host('k');
    await startKamailio(bed, k, { sipha: false, publicIp: k.ip });
    const t0 = performance.now();
    const r = await runSipp(bed, bed.host('client'), {
      scenario: 'register.xml',
      target: `${k.ip}:5060`,
      calls: N,
      rate: 10_000,
      limit: 2000,
      users: USERS,
      timeoutS: 300,
    });
    const s = (performance.now() - t0) / 1000;
    if (r.successful !== N) throw new Error(`direct: ${r.successful} of ${N} registered`);
    figures.direct_register_100k_s = round(s, 1);
    rows.push(['one Kamailio, no sidecar: register all', `${round(s, 1)} s`, `${Math.round(r.callRate)}/s (sipp)`]);
  } finally {
    await bed.destroy();
  }
}

const bed = NetBed.create(PAIR_BED_HOSTS);
try {
  const [a, b0] = await startPair(bed, bed.host('a'), bed.host('b'));
  let b = b0;
  const client = bed.host('client');
  // The floor the registrations add to: the master's RSS with none.
  figures.sidecar_rss_mib_idle = rssMib(a.sidecar.child.pid);
  const t0 = performance.now();
  const reg = await runSipp(bed, client, {
    scenario: 'register.xml',
    target: `${VIP}:5060`,
    calls: N,
    rate: RATE,
    limit: 2000,
    users: USERS,
    timeoutS: 300,
  });
  const regS = (performance.now() - t0) / 1000;
  if (reg.successful !== N) throw new Error(`pair: ${reg.successful} of ${N} registered`);
  await until(
    () => registered(b) === N,
    60_000,
    `the backup's Kamailio holds ${N}`,
    () => explainPair(a, b),
  );
  figures.pair_register_100k_s = round(regS, 1);
  figures.pair_register_rate_per_s = Math.round(reg.callRate);
  rows.push([
    'the pair: register all via the VIP',
    `${round(regS, 1)} s`,
    `${Math.round(reg.callRate)}/s (sipp, asked ${RATE}/s)`,
  ]);
  figures.sidecar_rss_mib_100k = rssMib(a.sidecar.child.pid);
  figures.backup_sidecar_rss_mib_100k = rssMib(b.sidecar.child.pid);
  rows.push([
    'sidecar RSS with them cached',
    `master ${figures.sidecar_rss_mib_100k} MiB (idle ${figures.sidecar_rss_mib_idle})`,
    `backup ${figures.backup_sidecar_rss_mib_100k} MiB`,
  ]);

  // The backup dies whole and comes back empty: the master replays its cache.
  await Promise.all([bed.stop(b.kamailio.child, 'SIGKILL'), bed.stop(b.sidecar.child, 'SIGKILL')]);
  await until(() => a.sidecar.metric('sipha_in_sync') === 0, 10_000, 'the master sees its backup gone');
  // Phases from the sidecars' own clocks (pino's time): the restart helper returns only once
  // the backup is ready (in sync), so a poll after it would time the burst at ~0.
  const r0 = Date.now();
  b = await b.restart();
  await until(() => a.sidecar.metric('sipha_in_sync') === 1, 120_000, 'the backup in sync again');
  await until(
    () => registered(b) === N,
    60_000,
    `the restarted backup's Kamailio holds ${N}`,
    () => explainPair(a, b),
  );
  const held = Date.now();
  const loggedAt = (n: PairNode, msg: string) =>
    logLines(n.sidecar.output()).find((l) => l.msg === msg && l.time >= r0)?.time ?? null;
  const sidecarUp = logLines(b.sidecar.output())[0]?.time ?? null;
  const streamUp = loggedAt(b, 'replication stream from the master');
  const burstSent = loggedAt(a, 'state cache replayed to the backup');
  const secs = (from: number | null, to: number | null) => (from !== null && to !== null ? round((to - from) / 1000, 2) : null);
  figures.resync_100k_s = secs(r0, held);
  // Restart -> the new sidecar's first log line: Kamailio's start, then node loading the sidecar.
  figures.resync_start_s = secs(r0, sidecarUp);
  // First log line -> the master's stream accepted by the backup: heartbeats, the join.
  figures.resync_join_s = secs(sidecarUp, streamUp);
  // Stream up -> the master wrote the last frame of its cache (8,192 unacknowledged at most).
  figures.burst_100k_s = secs(streamUp, burstSent);
  // Stream up -> the backup's Kamailio holds them all (polled): its own storing rate bounds this.
  figures.store_100k_s = secs(streamUp, held);
  figures.registered_on_backup_100k = registered(b);
  // What the restarted backup cached from the burst: all it would replay to the next backup once master.
  await until(
    () => b.sidecar.metric('sipha_state_cache_entries', { kind: 'registrations' }) === N,
    30_000,
    `the restarted backup caches ${N}`,
    () => explainPair(a, b),
  ).catch(() => {});
  figures.backup_cache_after_resync_100k = b.sidecar.metric('sipha_state_cache_entries', { kind: 'registrations' });
  rows.push([
    'backup restarted empty -> holds all again',
    `${figures.resync_100k_s} s`,
    `start ${figures.resync_start_s ?? '?'} s, join ${figures.resync_join_s ?? '?'} s, burst sent ${figures.burst_100k_s ?? '?'} s, stream up -> stored ${figures.store_100k_s ?? '?'} s`,
  ]);

  // A failover with them: the new master must hold every one.
  await bed.stop(a.kamailio.child, 'SIGKILL');
  await until(() => role(b) === 'master', 10_000, 'b takes over');
  const kept = registered(b);
  figures.regs_lost_100k = N - kept;
  rows.push(['master Kamailio killed: held by the new master', `${kept} of ${N}`, `${N - kept} lost`]);
} finally {
  await bed.destroy();
}

figures.users = N;
// A development run without the baseline says so in its figures.
figures.baseline_skipped = values['skip-direct'] ? 1 : 0;
table(`scale: ${N} registrations on the pair (netns bed, real Kamailio and sidecars)`, ['what', 'figure', 'detail'], rows);
writeFigures('scale', figures);
