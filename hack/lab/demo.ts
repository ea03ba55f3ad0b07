/**
 * The lab demo (npm run lab): a netns bed with one SIP host (stock Kamailio
 * behind the sipha sidecar), a client host and a called-party host. Users
 * register over UDP and TCP, calls run with hold, a malformed burst is
 * thrown in, and a summary says what happened.
 *
 *   npm run lab -- [--users N] [--calls N] [--cps N]
 */
import { parseArgs } from 'node:util';
import { REJECT_REASONS } from '../../sidecar/src/sip/reasons.ts';
import { readSip, startCapture, transactionLatenciesUs } from '../../test/lib/capture.ts';
import { GARBAGE_SCRIPT } from '../../test/lib/garbage-path.ts';
import { lookupAll, startKamailio, usrlocStat } from '../../test/lib/kamailio.ts';
import { NetBed } from '../../test/lib/netbed.ts';
import { startSidecar } from '../../test/lib/sidecar.ts';
import { runSipp, startUas, users } from '../../test/lib/sipp.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '500' },
    calls: { type: 'string', default: '100' },
    cps: { type: 'string', default: '20' },
  },
});
const nUsers = Math.max(1, Math.min(Number(values.users), 5000));
const nCalls = Math.max(1, Math.min(Number(values.calls), 2000));
const cps = Math.max(1, Math.min(Number(values.cps), 500));

const step = (s: string) => console.log(`\n\u25b6 ${s}`);
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number) : Number.NaN;
};
const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`;

const bed = NetBed.create([
  { name: 'sip', octet: 1 },
  { name: 'alice', octet: 10 },
  { name: 'bob', octet: 20 },
]);
try {
  const sip = bed.host('sip');
  const alice = bed.host('alice');
  const bob = bed.host('bob');
  step(`bed ${bed.id}: hosts sip ${sip.ip}, alice ${alice.ip}, bob ${bob.ip} (netns on a bridge)`);

  step('starting Kamailio (loopback only) and the sipha sidecar on the public address');
  const kamailio = await startKamailio(bed, sip, { sipha: true, publicIp: sip.ip });
  const sidecar = await startSidecar(sip, { SIPHA_LOG_LEVEL: 'warn' });
  const target = `${sip.ip}:5060`;
  const cap = await startCapture(bed, alice, 'port 5060');

  const half = Math.ceil(nUsers / 2);
  step(`registering ${half} users over UDP and ${nUsers - half} over TCP through the sidecar`);
  const udpUsers = users('alice', half);
  const tcpUsers = users('carol', nUsers - half);
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
    : { successful: 0, failed: 0 };
  const bindings = lookupAll(kamailio, [...udpUsers, ...tcpUsers]);
  const atClient = [...bindings.values()].filter((b) => b.received.startsWith(`sip:${alice.ip}:`)).length;

  step(`bob registers, then alice places ${nCalls} calls at ${cps}/s (INVITE, 180, 200, ACK, hold re-INVITE, 2 s, BYE)`);
  await runSipp(bed, bob, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['bob'] });
  const uas = startUas(bob);
  const calls = runSipp(bed, alice, {
    scenario: 'uac-call.xml',
    target,
    calls: nCalls,
    rate: cps,
    limit: nCalls,
    service: 'bob',
    holdMs: 2000,
    timeoutS: 120,
  });
  step('meanwhile: 300 malformed datagrams at the sidecar');
  const burst = alice.run(process.execPath, [GARBAGE_SCRIPT, sip.ip, '5060', '300', '2']).trim();
  const callResult = await calls;
  await bed.stop(uas.child);
  const options = await runSipp(bed, alice, { scenario: 'options.xml', target, calls: 100, rate: 100 });
  const packets = readSip(await cap.stop());
  const regLat = transactionLatenciesUs(packets, alice.ip, 'REGISTER');
  const invLat = transactionLatenciesUs(packets, alice.ip, 'INVITE');
  const dropped = REJECT_REASONS.map(
    (r) => [r, sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: r })] as const,
  ).filter(([, n]) => n > 0);

  console.log('\n================ sipha lab summary ================');
  console.log(
    `registrations   UDP ${regU.successful}/${udpUsers.length} answered 200, TCP ${regT.successful}/${tcpUsers.length} answered 200`,
  );
  console.log(
    `location table  ${usrlocStat(kamailio, 'registered_users')} users (incl. bob); ${atClient}/${nUsers} bound at alice's own address`,
  );
  console.log(
    `calls           ${callResult.successful}/${nCalls} completed, ${callResult.failed} failed (each: setup, hold re-INVITE, BYE)`,
  );
  console.log(`OPTIONS         ${options.successful}/100 answered`);
  console.log(
    `latency (wire)  REGISTER p50 ${ms(pct(regLat, 50))} p99 ${ms(pct(regLat, 99))}; INVITE->200 p50 ${ms(pct(invLat, 50))} p99 ${ms(pct(invLat, 99))}`,
  );
  console.log(
    `sidecar         ${sidecar.metric('sipha_messages_total', { path: 'inbound' })} in, ${sidecar.metric('sipha_messages_total', { path: 'to_client' })} out; malformed burst: ${burst}, dropped and counted: ${dropped.map(([r, n]) => `${r}=${n}`).join(' ')}`,
  );
  console.log('====================================================');
  const ok = regU.failed === 0 && callResult.failed === 0 && callResult.successful === nCalls && atClient === nUsers;
  process.exitCode = ok ? 0 : 1;
} finally {
  await bed.destroy();
}
