/**
 * npm run bench -- overhead   [--quick]
 *
 * What the sidecar costs, measured in one run on one netns bed: Kamailio
 * reached directly (baseline, its own instance on port 5080) and Kamailio
 * behind the sidecar (port 5060), both on the same host, steps alternated
 * so the machine's noise hits both alike.
 *
 * - Max rate at < 1% failures: sipp at a ladder of rates, REGISTER and calls
 *   (INVITE/180/200/ACK, re-INVITE, BYE); a step passes when < 1% fail and
 *   sipp created calls at >= 90% of the target rate.
 * - Response time p50/p99: from a packet capture on the client's interface
 *   (kernel timestamps, µs), request -> final response, at a moderate rate.
 *
 * Everything (sipp, Kamailio, sidecar) shares this machine's cores: the
 * absolute figures are this machine's, the ratios are the result.
 */
import { readSip, startCapture, transactionLatenciesUs } from '../test/lib/capture.ts';
import { startKamailio } from '../test/lib/kamailio.ts';
import { NetBed } from '../test/lib/netbed.ts';
import { startSidecar } from '../test/lib/sidecar.ts';
import { runSipp, startUas, users } from '../test/lib/sipp.ts';
import { maxRateLadder } from './lib/ladder.ts';
import { median, percentile, round, table, writeFigures } from './lib/report.ts';

const quick = process.argv.includes('--quick');
const STEP_S = quick ? 2 : 3;
const REGISTER_LADDER = quick ? [1000, 3000, 6000] : [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000, 14000];
const CALL_LADDER = quick ? [100, 300] : [100, 200, 300, 400, 500, 600, 800, 1000, 1200, 1500];
// Hold between the hold re-INVITE's ACK and the BYE. With 0, BYE follows ACK by
// microseconds and Kamailio's parallel UDP workers (the direct baseline) may
// reorder them; no real phone does that.
const HOLD_MS = 200;
const LATENCY_ROUNDS = quick ? 1 : 3;

type Mode = 'direct' | 'sidecar';
const MODES: Mode[] = ['direct', 'sidecar'];

const bed = NetBed.create([
  { name: 'server', octet: 1 },
  { name: 'client', octet: 10 },
  { name: 'uas', octet: 20 },
]);

try {
  const server = bed.host('server');
  const client = bed.host('client');
  const uasHost = bed.host('uas');
  console.log(`bed ${bed.id}: starting Kamailio (direct :5080 and behind sidecar :5060)`);
  await startKamailio(bed, server, { sipha: false, publicIp: server.ip, tag: '-direct', directPort: 5080 });
  await startKamailio(bed, server, { sipha: true, publicIp: server.ip, tag: '-sipha' });
  await startSidecar(server, { SIPHA_LOG_LEVEL: 'warn' });
  const target: Record<Mode, string> = { direct: `${server.ip}:5080`, sidecar: `${server.ip}:5060` };

  // The called party registers with both, then answers every call.
  for (const mode of MODES) {
    const r = await runSipp(bed, uasHost, { scenario: 'register.xml', target: target[mode], calls: 1, rate: 10, users: ['uas'] });
    if (r.successful !== 1) throw new Error(`UAS registration via ${mode} failed:\n${r.output.slice(-1500)}`);
  }
  const uas = startUas(uasHost);
  const pool = users('bench', 10000);

  // ---- response time from the wire ----
  const lat: Record<Mode, { register: number[]; invite: number[] }> = {
    direct: { register: [], invite: [] },
    sidecar: { register: [], invite: [] },
  };
  for (let round_ = 1; round_ <= LATENCY_ROUNDS; round_++) {
    for (const mode of MODES) {
      const cap = await startCapture(bed, client, 'udp port 5060 or udp port 5080');
      await runSipp(bed, client, {
        scenario: 'register.xml',
        target: target[mode],
        calls: 2000,
        rate: 500,
        users: pool,
        timeoutS: 30,
      });
      await runSipp(bed, client, {
        scenario: 'uac-call.xml',
        target: target[mode],
        calls: 300,
        rate: 50,
        limit: 300,
        service: 'uas',
        holdMs: HOLD_MS,
        timeoutS: 30,
      });
      const packets = readSip(await cap.stop());
      lat[mode].register.push(...transactionLatenciesUs(packets, client.ip, 'REGISTER'));
      lat[mode].invite.push(...transactionLatenciesUs(packets, client.ip, 'INVITE'));
      console.log(
        `latency round ${round_} ${mode}: ${lat[mode].register.length} REGISTER, ${lat[mode].invite.length} INVITE samples`,
      );
    }
  }

  // ---- max rate at < 1% failures ----
  const reg = await maxRateLadder(bed, client, {
    label: 'REGISTER',
    targets: target,
    rates: REGISTER_LADDER,
    stepS: STEP_S,
    base: { scenario: 'register.xml', users: pool },
  });
  const calls = await maxRateLadder(bed, client, {
    label: 'call',
    targets: target,
    rates: CALL_LADDER,
    stepS: STEP_S,
    base: { scenario: 'uac-call.xml', service: 'uas', holdMs: HOLD_MS },
  });
  await bed.stop(uas.child);

  table(
    'max-rate ladder steps',
    ['scenario', 'mode', 'target/s', 'achieved/s', 'failed %', 'result'],
    [...reg.rows, ...calls.rows],
  );

  const p = (xs: number[], q: number) => round(percentile(xs, q), 0);
  const figures = {
    register_direct_max_rate: reg.best.direct,
    register_sidecar_max_rate: reg.best.sidecar,
    throughput_ratio: round(reg.best.sidecar / reg.best.direct, 3),
    calls_direct_max_cps: calls.best.direct,
    calls_sidecar_max_cps: calls.best.sidecar,
    calls_throughput_ratio: round(calls.best.sidecar / calls.best.direct, 3),
    register_direct_p50_us: p(lat.direct.register, 50),
    register_direct_p99_us: p(lat.direct.register, 99),
    register_sidecar_p50_us: p(lat.sidecar.register, 50),
    register_sidecar_p99_us: p(lat.sidecar.register, 99),
    invite_direct_p50_us: p(lat.direct.invite, 50),
    invite_direct_p99_us: p(lat.direct.invite, 99),
    invite_sidecar_p50_us: p(lat.sidecar.invite, 50),
    invite_sidecar_p99_us: p(lat.sidecar.invite, 99),
    added_latency_p50_us: round(median(lat.sidecar.register) - median(lat.direct.register), 0),
    added_latency_p99_us: round(percentile(lat.sidecar.register, 99) - percentile(lat.direct.register, 99), 0),
    added_invite_latency_p50_us: round(median(lat.sidecar.invite) - median(lat.direct.invite), 0),
    latency_samples_register: lat.sidecar.register.length,
    step_seconds: STEP_S,
    quick,
    note: 'sipp, Kamailio and the sidecar share the same 2 cores; ratios matter, absolute rates are this machine',
  };
  /** A table row: label, direct, sidecar, and their ratio. */
  const ratioRow = (label: string, direct: number, sidecar: number) => [label, direct, sidecar, round(sidecar / direct, 2)];
  table(
    'overhead: Kamailio direct vs behind the sipha sidecar (same bed, same run)',
    ['figure', 'direct', 'sidecar', 'sidecar/direct'],
    [
      ['REGISTER max rate /s (<1% fail)', reg.best.direct, reg.best.sidecar, figures.throughput_ratio],
      ['calls max cps (<1% fail)', calls.best.direct, calls.best.sidecar, figures.calls_throughput_ratio],
      ratioRow('REGISTER p50 µs', figures.register_direct_p50_us, figures.register_sidecar_p50_us),
      ratioRow('REGISTER p99 µs', figures.register_direct_p99_us, figures.register_sidecar_p99_us),
      ratioRow('INVITE->200 p50 µs', figures.invite_direct_p50_us, figures.invite_sidecar_p50_us),
      ratioRow('INVITE->200 p99 µs', figures.invite_direct_p99_us, figures.invite_sidecar_p99_us),
    ],
  );
  console.log(
    `\nadded latency p50: ${figures.added_latency_p50_us} µs (REGISTER), ${figures.added_invite_latency_p50_us} µs (INVITE->200, two sidecar passes each way)`,
  );
  writeFigures('overhead', figures);
} finally {
  await bed.destroy();
}
