import { startKamailio } from '../test/lib/kamailio.ts';
import { type Host, NetBed } from '../test/lib/netbed.ts';
import { startPair, VIP } from '../test/lib/pair.ts';
import { startSidecar } from '../test/lib/sidecar.ts';
import { runSipp, startUas, users } from '../test/lib/sipp.ts';
import { maxRateLadder, registerLatenciesUs } from './lib/ladder.ts';
import { histogramQuantile, median, round, table, writeFigures } from './lib/report.ts';

const quick = process.argv.includes('--quick');
const LADDER = quick ? [1000, 3000] : [1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000];
const STEP_S = 3;

const bed = NetBed.create([
  { name: 'a', octet: 1 },
  { name: 'b', octet: 2 },
  { name: 'single', octet: 3 },
  { name: 'client', octet: 10 },
  { name: 'uas', octet: 20 },
]);
try {
  const [ha, hb, single, client, uasHost] = ['a', 'b', 'single', 'client', 'uas'].map((n) => bed.host(n)) as [
    Host,
    Host,
    Host,
    Host,
    Host,
  ];
  const [master] = await startPair(bed, ha, hb, { SIPHA_LOG_LEVEL: 'warn' });
  await startKamailio(bed, single, { sipha: true, publicIp: single.ip });
  await startSidecar(single, { SIPHA_LOG_LEVEL: 'warn' });
  const target = { pair: `${VIP}:5060`, single: `${single.ip}:5060` } as const;
  const modes = ['single', 'pair'] as const;
  const pool = users('rep', 10000);

  // ---- lag at 500 calls/s ----
  for (const mode of modes)
    await runSipp(bed, uasHost, {
      scenario: 'register.xml',
      target: target[mode],
      calls: 1,
      rate: 10,
      users: ['uas'],
      localPort: mode === 'pair' ? 5060 : 5062,
    });
  const uasPair = startUas(uasHost, 5060);
  const uasSingle = startUas(uasHost, 5062);
  /** Calls (INVITE, 180, 200, ACK, hold re-INVITE, 200 ms, BYE) at `rate` per second. */
  const callLoad = (to: string, rate: number, calls: number) =>
    runSipp(bed, client, {
      scenario: 'uac-call.xml',
      target: to,
      calls,
      rate,
      limit: rate * 4,
      service: 'uas',
      holdMs: 200,
      timeoutS: 60,
    });
  /**
   * Replication lag of every message replicated while `rate` calls/s ran, from the
   * master's sipha_replication_lag_seconds histogram (scraped before and after).
   */
  const lagDuring = async (rate: number, calls: number) => {
    const before = master.sidecar.histogram('sipha_replication_lag_seconds');
    const run = await callLoad(target.pair, rate, calls);
    const after = master.sidecar.histogram('sipha_replication_lag_seconds');
    const q = (x: number) => histogramQuantile(before, after, x);
    const [p50, p99] = [q(0.5), q(0.99)];
    console.log(
      `lag at ${rate} cps: p50 ${(p50.value * 1000).toFixed(3)} ms, p99 ${(p99.value * 1000).toFixed(3)} ms ` +
        `(bucket <= ${p99.upTo * 1000} ms; ${p50.count} messages; ${run.successful} calls ok, ${run.failed} failed)`,
    );
    return { p50: p50.value * 1000, p99: p99.value * 1000, messages: p50.count, before, after, run };
  };
  // Context: the lag at half the rate, where this 2-core machine is not saturated.
  const half = await lagDuring(250, quick ? 750 : 2500);
  // Three runs at 500 calls/s: the machine is noisy, the figures are their medians.
  const full = [];
  for (let i = 0; i < (quick ? 1 : 3); i++) full.push(await lagDuring(500, quick ? 1500 : 5000));
  const pooled99 = histogramQuantile(full[0]?.before ?? [], full.at(-1)?.after ?? [], 0.99).value * 1000;
  const lagP50 = median(full.map((r) => r.p50));
  const lagP99 = median(full.map((r) => r.p99));
  const lagCalls = {
    successful: full.reduce((n, r) => n + r.run.successful, 0),
    failed: full.reduce((n, r) => n + r.run.failed, 0),
  };
  // The same call load through one Kamailio behind the edge proxy: failures there are the machine's, not replication's.
  const singleCalls = await callLoad(target.single, 500, quick ? 1500 : 5000);
  console.log(`same load through a single Kamailio + sidecar: ${singleCalls.successful} calls ok, ${singleCalls.failed} failed`);

  // ---- response time: single vs pair, wire capture ----
  const lat: Record<(typeof modes)[number], number[]> = { single: [], pair: [] };
  for (let round_ = 0; round_ < (quick ? 1 : 3); round_++) {
    for (const mode of modes) {
      lat[mode].push(...(await registerLatenciesUs(bed, client, target[mode], pool, 'udp port 5060')));
    }
  }

  // ---- max REGISTER rate ----
  const { best, rows } = await maxRateLadder(bed, client, {
    label: 'REGISTER',
    targets: target,
    rates: LADDER,
    stepS: STEP_S,
    base: { scenario: 'register.xml', users: pool },
  });
  await bed.stop(uasPair.child);
  await bed.stop(uasSingle.child);

  table('REGISTER ladder', ['scenario', 'set-up', 'target/s', 'achieved/s', 'failed %', 'result'], rows);
  const figures = {
    replication_lag_ms_p50: round(lagP50, 3),
    replication_lag_ms_p99: round(lagP99, 3),
    lag_load_calls_per_s: 500,
    replication_lag_ms_p99_runs: full.map((r) => round(r.p99, 3)).join(' / '),
    replication_lag_ms_p99_pooled: round(pooled99, 3),
    replication_lag_messages: full.reduce((n, r) => n + r.messages, 0),
    replication_lag_source: 'histogram sipha_replication_lag_seconds, every message of the run, interpolated in its bucket',
    replication_lag_ms_p50_at_250cps: round(half.p50, 3),
    replication_lag_ms_p99_at_250cps: round(half.p99, 3),
    calls_failed_at_250cps: half.run.failed,
    lag_load_calls_ok: lagCalls.successful,
    lag_load_calls_failed: lagCalls.failed,
    single_load_calls_ok: singleCalls.successful,
    single_load_calls_failed: singleCalls.failed,
    single_register_max_rate: best.single,
    pair_register_max_rate: best.pair,
    pair_throughput_ratio: round(best.pair / best.single, 3),
    single_register_p50_us: round(median(lat.single), 0),
    pair_register_p50_us: round(median(lat.pair), 0),
    pair_added_latency_p50_us: round(median(lat.pair) - median(lat.single), 0),
    replication_mode: 'sync',
  };
  table(
    'replication: the pair (sync) vs one Kamailio behind the edge proxy',
    ['figure', 'single', 'pair', 'pair/single'],
    [
      ['REGISTER max rate /s', best.single, best.pair, figures.pair_throughput_ratio],
      [
        'REGISTER p50 µs (wire)',
        figures.single_register_p50_us,
        figures.pair_register_p50_us,
        round(figures.pair_register_p50_us / figures.single_register_p50_us, 2),
      ],
      [
        'replication lag p50 / p99 ms at 500 cps',
        '-',
        `${figures.replication_lag_ms_p50} / ${figures.replication_lag_ms_p99}`,
        '-',
      ],
    ],
  );
  writeFigures('replication', figures);
} finally {
  await bed.destroy();
}
