/**
 * npm run bench -- resources   [--users N] [--more-users N] [--calls N]
 *
 * Memory of the sidecar and of Kamailio on the netns bed, to size the pods'
 * requests and limits (docs/decisions/0008-rbac-resources.md). Both nodes of a
 * pair (a master, b backup), at each phase:
 *   idle:    the pair started and settled;
 *   load:    1000 users register through the VIP, then 1000 calls at 100/s with 2 s hold
 *            (about 200 in progress), every message replicated to the backup;
 *   resync:  the backup is killed and restarted empty; the master replays its state
 *            cache (the 1001 registrations) to it as a burst (peak during the rejoin, both sides);
 *   more:    10,000 more registrations at 1000/s (how memory grows per registration).
 * CPU: user + system seconds of each process tree over the phase, divided by its wall time.
 * Memory = PSS summed over the process tree (what a memory cgroup charges; Kamailio's
 * shared pool counted once) and RSS summed (what ps shows), sampled every 200 ms, peak
 * per phase. Kamailio runs as test/lib/kamailio.ts starts it (-m 256 -M 16: the pools
 * are caps, untouched pages cost nothing). sipp, Kamailio and the sidecars share the
 * machine's cores.
 */
import { parseArgs } from 'node:util';
import { usrlocStat } from '../test/lib/kamailio.ts';
import { type PairNode, pairBed, role, VIP } from '../test/lib/pair.ts';
import { until } from '../test/lib/procs.ts';
import { callsToUas, runSipp, users } from '../test/lib/sipp.ts';
import { peakSampler, type TreeMemory, treeCpuSeconds, treeMemory } from './lib/memory.ts';
import { round, table, writeFigures } from './lib/report.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '1000' },
    'more-users': { type: 'string', default: '10000' },
    calls: { type: 'string', default: '1000' },
  },
});
const USERS = Number(values.users);
const MORE = Number(values['more-users']);
const CALLS = Number(values.calls);

type Part = 'sidecar' | 'kamailio';
const pidOf = (n: PairNode, part: Part) => {
  const pid = n[part].child.pid;
  if (pid === undefined) throw new Error(`${n.host.name} ${part} has no pid`);
  return pid;
};

interface Usage extends TreeMemory {
  /** CPU used over the phase / its wall time: cores busy on average. */
  cores: number;
}

/** Runs `work` while sampling both parts of both nodes; returns the memory peaks and the CPU used. */
async function during(nodes: PairNode[], work: () => Promise<void>): Promise<Map<string, Usage>> {
  const t0 = performance.now();
  const samplers = nodes.flatMap((n) =>
    (['sidecar', 'kamailio'] as const).map((part) => {
      const pid = pidOf(n, part);
      return { key: `${n.host.name}.${part}`, pid, cpu0: treeCpuSeconds(pid), peak: peakSampler(() => treeMemory(pid)) };
    }),
  );
  await work();
  const wallS = (performance.now() - t0) / 1000;
  return new Map(samplers.map((s) => [s.key, { ...s.peak.stop(), cores: (treeCpuSeconds(s.pid) - s.cpu0) / wallS }]));
}

const pb = await pairBed({ SIPHA_LOG_LEVEL: 'warn' });
const { bed, a, client, uas } = pb;
let b = pb.b;
const rows: Array<Array<string | number>> = [];
const figures: Record<string, number | string> = {};
const record = (phase: string, peaks: Map<string, Usage | TreeMemory>) => {
  for (const [key, m] of peaks) {
    const [node, part] = key.split('.') as [string, Part];
    const side = node === 'a' ? 'master' : 'backup';
    const cores = 'cores' in m ? round(m.cores, 3) : '-';
    rows.push([phase, side, part, round(m.pssMiB, 1), round(m.rssMiB, 1), round(m.rootRssMiB, 1), m.processes, cores]);
    figures[`${part}_${side}_${phase}_pss_mib`] = round(m.pssMiB, 1);
    figures[`${part}_${side}_${phase}_rss_mib`] = round(m.rssMiB, 1);
    if (part === 'sidecar') figures[`${part}_${side}_${phase}_main_rss_mib`] = round(m.rootRssMiB, 1);
    if (typeof cores === 'number') figures[`${part}_${side}_${phase}_cores`] = cores;
  }
};
try {
  const target = `${VIP}:5060`;
  record('idle', await during([a, b], () => new Promise((r) => setTimeout(r, 3000))));

  record(
    'load',
    await during([a, b], async () => {
      const reg = await runSipp(bed, client, {
        scenario: 'register.xml',
        target,
        calls: USERS,
        rate: 500,
        users: users('res', USERS),
      });
      if (reg.successful !== USERS) throw new Error(`${reg.failed} of ${USERS} REGISTERs failed: ${reg.errors}`);
      const calls = await callsToUas(bed, client, uas, target, CALLS, { rate: 100, holdMs: 2000 });
      figures.load_calls_ok = calls.successful;
      figures.load_calls_failed = calls.failed;
    }),
  );
  const registered = USERS + 1; // and the called party
  await until(() => usrlocStat(b.kamailio, 'registered_users') === registered, 10000, 'the backup holds every registration');

  // Burst resync: the backup dies and comes back empty; only the master is sampled across the
  // restart (the new backup's processes do not exist yet), then both while the burst lands.
  // (CPU of the master across the restart is not a phase figure: only its memory peak is kept.)
  const masterPeak = peakSampler(() => treeMemory(pidOf(a, 'sidecar')));
  const masterKamailioPeak = peakSampler(() => treeMemory(pidOf(a, 'kamailio')));
  await Promise.all([bed.stop(b.kamailio.child, 'SIGKILL'), bed.stop(b.sidecar.child, 'SIGKILL')]);
  const started = Date.now();
  b = await b.restart();
  const newBackup: Map<string, Usage | TreeMemory> = await during([b], async () => {
    await until(() => role(b) === 'backup', 10000, 'the restarted node rejoins as backup');
    await until(() => usrlocStat(b.kamailio, 'registered_users') === registered, 30000, 'burst applied');
    await new Promise((r) => setTimeout(r, 1000));
  });
  figures.resync_registrations = registered;
  figures.resync_s = round((Date.now() - started) / 1000, 2);
  newBackup.set('a.sidecar', masterPeak.stop());
  newBackup.set('a.kamailio', masterKamailioPeak.stop());
  record('resync', newBackup);

  record(
    'more',
    await during([a, b], async () => {
      const reg = await runSipp(bed, client, {
        scenario: 'register.xml',
        target,
        calls: MORE,
        rate: 1000,
        users: users('more', MORE),
      });
      if (reg.successful !== MORE) throw new Error(`${reg.failed} of ${MORE} REGISTERs failed: ${reg.errors}`);
    }),
  );
  await until(
    () => usrlocStat(b.kamailio, 'registered_users') === registered + MORE,
    20000,
    'the backup holds every registration',
  );

  figures.users = USERS;
  figures.more_users = MORE;
  figures.calls = CALLS;
  figures.memory_source =
    'PSS and RSS summed over each process tree (/proc/PID/smaps_rollup), peak of 200 ms samples; PSS splits pages shared with the other node (same binaries on one machine), RSS counts them whole; CPU = (utime+stime) / wall per phase; Kamailio -m 256 -M 16, children=4 tcp_children=4; sipp, both nodes and the bench share 2 cores';
  table(
    'memory of the sidecar and Kamailio (MiB), peak per phase',
    ['phase', 'node', 'part', 'PSS', 'RSS sum', 'RSS main', 'processes', 'CPU cores'],
    rows,
  );
  writeFigures('resources', figures);
} catch (err) {
  for (const n of [a, b])
    console.error(
      `--- ${n.host.name} kamailio:\n${n.kamailio.output().slice(-3000)}\n--- sidecar:\n${n.sidecar.output().slice(-3000)}`,
    );
  throw err;
} finally {
  await bed.destroy();
}
