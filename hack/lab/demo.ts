import { parseArgs } from 'node:util';
import { REJECT_REASONS } from '../../sidecar/src/sip/reasons.ts';
import { GARBAGE_SCRIPT } from '../../test/lib/garbage-path.ts';
import { lookupAll, usrlocStat } from '../../test/lib/kamailio.ts';
import { NetBed } from '../../test/lib/netbed.ts';
import { role, startPair, VIP } from '../../test/lib/pair.ts';
import { gapMs, startProber } from '../../test/lib/prober.ts';
import { until } from '../../test/lib/procs.ts';
import { runSipp, startUas, users } from '../../test/lib/sipp.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '1000' },
    calls: { type: 'string', default: '60' },
    fault: { type: 'string', default: 'kamailio_kill' },
  },
});
const nUsers = Math.max(1, Math.min(Number(values.users), 5000));
const nCalls = Math.max(1, Math.min(Number(values.calls), 500));
const fault = values.fault === 'host_down' ? 'host_down' : 'kamailio_kill';

const step = (s: string) => console.log(`\n\u25b6 ${s}`);
const bed = NetBed.create([
  { name: 'a', octet: 1 },
  { name: 'b', octet: 2 },
  { name: 'alice', octet: 10 },
  { name: 'bob', octet: 20 },
]);
try {
  const [ha, hb, alice, bob] = ['a', 'b', 'alice', 'bob'].map((n) => bed.host(n)) as [
    ReturnType<typeof bed.host>,
    ReturnType<typeof bed.host>,
    ReturnType<typeof bed.host>,
    ReturnType<typeof bed.host>,
  ];
  step(
    `bed ${bed.id}: SIP hosts a ${ha.ip} and b ${hb.ip}, VIP ${VIP}; clients alice ${alice.ip}, bob ${bob.ip} (netns on a bridge, real ARP)`,
  );
  step('starting Kamailio + sipha sidecar on a and b; they elect a master over authenticated heartbeats');
  const [a, b] = await startPair(bed, ha, hb);
  console.log(`  a is ${role(a)}, b is ${role(b)}`);

  const target = `${VIP}:5060`;
  const half = Math.ceil(nUsers / 2);
  const udpUsers = users('alice', half);
  const tcpUsers = users('carol', nUsers - half);
  step(`registering ${udpUsers.length} users over UDP and ${tcpUsers.length} over TCP through the VIP`);
  const regU = await runSipp(bed, alice, {
    scenario: 'register.xml',
    target,
    calls: udpUsers.length,
    rate: 500,
    users: udpUsers,
  });
  const regT = tcpUsers.length
    ? await runSipp(bed, alice, {
        scenario: 'register.xml',
        target,
        transport: 't1',
        localPort: 5070,
        calls: tcpUsers.length,
        rate: 500,
        users: tcpUsers,
      })
    : { successful: 0 };
  const all = [...udpUsers, ...tcpUsers];
  await until(() => usrlocStat(b.kamailio, 'registered_users') >= all.length, 10000, 'replicated to b');
  console.log(
    `  answered 200: ${regU.successful + regT.successful}/${all.length}; a's Kamailio holds ${usrlocStat(a.kamailio, 'registered_users')}, b's (the backup, fed by replication) holds ${usrlocStat(b.kamailio, 'registered_users')}`,
  );

  step(`bob registers; alice places ${nCalls} calls at 10/s, each held 8 s (INVITE, 180, 200, ACK, hold re-INVITE, BYE)`);
  await runSipp(bed, bob, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['bob'] });
  const uas = startUas(bob);
  const calls = runSipp(bed, alice, {
    scenario: 'uac-call.xml',
    target,
    calls: nCalls,
    rate: 10,
    limit: nCalls,
    service: 'bob',
    holdMs: 8000,
    timeoutS: 90,
  });
  const prober = startProber(bed, alice, VIP, 10, 12000);
  alice.run(process.execPath, [GARBAGE_SCRIPT, VIP, '5060', '200', '2']);
  await new Promise((r) => setTimeout(r, 4000));
  const backupEgressBefore = b.sidecar.metric('sipha_messages_total', { path: 'to_client' });
  const withheld = b.sidecar.metric('sipha_messages_dropped_total', { path: 'egress', reason: 'role-backup' });

  step(fault === 'host_down' ? "fault: a's link goes down and its processes die" : "fault: kill -9 of a's Kamailio");
  const faultWallMs = Date.now();
  if (fault === 'host_down') ha.run('ip', ['link', 'set', 'eth0', 'down']);
  const faultNs = process.hrtime.bigint();
  await Promise.all([
    bed.stop(a.kamailio.child, 'SIGKILL'),
    ...(fault === 'host_down' ? [bed.stop(a.sidecar.child, 'SIGKILL')] : []),
  ]);
  await until(() => role(b) === 'master', 10000, 'b takes over');
  const gap = gapMs(await prober.done, faultNs);
  const callResult = await calls;
  await bed.stop(uas.child);

  // b's own log tells when it decided and when it served.
  const events = b.sidecar
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map(
      (l) => JSON.parse(l) as { time: number; msg: string; reason?: string; detectToVipMs?: number; detectToServingMs?: number },
    )
    .filter((e) => e.time >= faultWallMs - 5);
  const decided = events.find((e) => e.msg === 'role change');
  const serving = events.find((e) => e.msg === 'serving as master');
  const kept = lookupAll(b.kamailio, all).size;
  const dropped = REJECT_REASONS.map(
    (r) => [r, b.sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: r })] as const,
  ).filter(([, n]) => n > 0);

  console.log('\n================ sipha lab: failover of a pair ================');
  console.log(`fault (${fault})                    t = 0 ms`);
  console.log(`b detects it and takes over (${decided?.reason ?? '?'})   t = ${decided ? decided.time - faultWallMs : '?'} ms`);
  console.log(
    `b holds the VIP, ARP announced            t = ${serving && decided ? (decided.time - faultWallMs + (serving.detectToVipMs ?? 0)).toFixed(1) : '?'} ms`,
  );
  console.log(`first OPTIONS answered via the VIP        t = ${gap === null ? 'never' : gap.toFixed(1)} ms (10 ms prober)`);
  console.log(`registrations kept                        ${kept}/${all.length} in b's location table`);
  console.log(
    `calls                                     ${callResult.successful}/${nCalls} completed with BYE answered 200, ${callResult.failed} failed`,
  );
  console.log(
    `backup egress before the fault            ${backupEgressBefore} SIP messages sent, ${withheld} withheld (its Kamailio's replies)`,
  );
  console.log(`malformed datagrams during the calls      200 sent; dropped and counted on a (then master)`);
  console.log(
    `b's inbound drops since it took over      ${dropped.length ? dropped.map(([r, n]) => `${r}=${n}`).join(' ') : 'none'}`,
  );
  console.log('================================================================');
  process.exitCode = kept === all.length && callResult.failed === 0 ? 0 : 1;
} finally {
  await bed.destroy();
}
