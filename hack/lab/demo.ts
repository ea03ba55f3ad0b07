import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REJECT_REASONS } from '../../sidecar/src/sip/reasons.ts';
import { readSip, startCapture } from '../../test/lib/capture.ts';
import { GARBAGE_SCRIPT } from '../../test/lib/garbage-path.ts';
import { lookupAll, usrlocStat } from '../../test/lib/kamailio.ts';
import { NetBed } from '../../test/lib/netbed.ts';
import { role, startPair, VIP } from '../../test/lib/pair.ts';
import { gapMs, startProber } from '../../test/lib/prober.ts';
import { until } from '../../test/lib/procs.ts';
import { runSipp, startUas, users } from '../../test/lib/sipp.ts';
import { writeTimelinePng } from './timeline.ts';

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
/** Where the lab leaves its picture and summary (ignored by git). */
const OUT = fileURLToPath(new URL('../../lab-out', import.meta.url));
mkdirSync(OUT, { recursive: true });
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
  // What the clients sent, to find the requests they had to send again.
  const probeStartWallMs = Date.now();
  alice.run(process.execPath, [GARBAGE_SCRIPT, VIP, '5060', '200', '2']);
  // After the malformed burst (its datagrams repeat: they are not retransmissions).
  const capture = await startCapture(bed, alice, `host ${VIP} and port 5060`);
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
  const probeLog = await prober.done;
  const gap = gapMs(probeLog, faultNs);
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

  const summary: string[] = [];
  const say = (line: string) => {
    summary.push(line);
    console.log(line);
  };
  say('\n================ sipha lab: failover of a pair ================');
  say(`fault (${fault})                    t = 0 ms`);
  say(`b detects it and takes over (${decided?.reason ?? '?'})   t = ${decided ? decided.time - faultWallMs : '?'} ms`);
  say(
    `b holds the VIP, ARP announced            t = ${serving && decided ? (decided.time - faultWallMs + (serving.detectToVipMs ?? 0)).toFixed(1) : '?'} ms`,
  );
  say(`first OPTIONS answered via the VIP        t = ${gap === null ? 'never' : gap.toFixed(1)} ms (10 ms prober)`);
  say(`registrations kept                        ${kept}/${all.length} in b's location table`);
  say(
    `calls                                     ${callResult.successful}/${nCalls} completed with BYE answered 200, ${callResult.failed} failed`,
  );
  say(
    `backup egress before the fault            ${backupEgressBefore} SIP messages sent, ${withheld} withheld (its Kamailio's replies)`,
  );
  say(`malformed datagrams during the calls      200 sent; dropped and counted on a (then master)`);
  say(`b's inbound drops since it took over      ${dropped.length ? dropped.map(([r, n]) => `${r}=${n}`).join(' ') : 'none'}`);
  say('================================================================');

  // The same story as a picture.
  // (OPTIONS are the prober's: one per slot, never sent again; they are the top lane.)
  const sent = readSip(await capture.stop()).filter(
    (p) => p.src.startsWith(alice.ip) && p.status === 0 && p.method !== '' && p.method !== 'OPTIONS',
  );
  const seen = new Set<string>();
  const retransmissions: Array<{ t: number; what: string }> = [];
  for (const p of sent) {
    const key = `${p.callId} ${p.cseq} ${p.method}`;
    if (seen.has(key)) retransmissions.push({ t: p.time * 1000 - faultWallMs, what: p.method });
    seen.add(key);
  }
  const fromFault = (ns: string) => Number(BigInt(ns) - faultNs) / 1e6;
  const decidedMs = decided ? decided.time - faultWallMs : null;
  const png = await writeTimelinePng(
    {
      title: `sipha: failover of a pair (${fault === 'host_down' ? "the master's host goes down" : "kill -9 of the master's Kamailio"})`,
      subtitle: `Clients saw ${gap === null ? 'no answer at all' : `${gap.toFixed(0)} ms without answers`}. ${kept}/${all.length} registrations kept, ${callResult.successful}/${nCalls} calls ended with BYE 200, ${retransmissions.length} requests retransmitted.`,
      probes: probeLog.sentNs.map((ns, i) => ({ t: fromFault(ns), answered: probeLog.answeredNs[i] !== null })),
      retransmissions,
      milestones: [
        {
          t: 0,
          label: fault === 'host_down' ? "fault: master's link down, its processes killed" : "fault: master's Kamailio killed",
        },
        ...(decidedMs !== null ? [{ t: decidedMs, label: `backup takes over (${decided?.reason})` }] : []),
        ...(decidedMs !== null && serving?.detectToVipMs !== undefined
          ? [{ t: decidedMs + serving.detectToVipMs, label: 'backup holds the VIP, gratuitous ARP sent' }]
          : []),
        ...(gap !== null ? [{ t: gap, label: 'first OPTIONS answered through the VIP' }] : []),
      ],
      fromMs: Math.round(probeStartWallMs - faultWallMs),
      toMs: Math.round(fromFault(probeLog.sentNs.at(-1) ?? '0')),
    },
    `${OUT}/failover-timeline.png`,
  );
  writeFileSync(`${OUT}/failover-summary.txt`, `${summary.join('\n')}\n`);
  console.log(`timeline picture: ${png}\nsummary: ${OUT}/failover-summary.txt`);
  process.exitCode = kept === all.length && callResult.failed === 0 ? 0 : 1;
} finally {
  await bed.destroy();
}
