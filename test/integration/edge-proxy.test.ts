/**
 * The edge proxy in front of stock Kamailio, on the netns bed with sipp:
 * registrations over UDP and TCP keep the client's own address, calls with
 * hold complete, OPTIONS are answered, and a burst of malformed datagrams
 * during calls is counted and harms nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { REJECT_REASONS } from '../../sidecar/src/sip/reasons.ts';
import { GARBAGE_SCRIPT } from '../lib/garbage-path.ts';
import { type Kamailio, lookupAll, startKamailio, usrlocStat } from '../lib/kamailio.ts';
import { type Host, NetBed } from '../lib/netbed.ts';
import { type Sidecar, startSidecar } from '../lib/sidecar.ts';
import { runSipp, startUas, users } from '../lib/sipp.ts';

const GARBAGE = GARBAGE_SCRIPT;

describe('edge proxy with Kamailio on the netns bed', { timeout: 300_000 }, () => {
  let bed: NetBed;
  let server: Host;
  let client: Host;
  let uasHost: Host;
  let kamailio: Kamailio;
  let sidecar: Sidecar;
  let target: string;

  before(async () => {
    bed = NetBed.create([
      { name: 'server', octet: 1 },
      { name: 'client', octet: 10 },
      { name: 'uas', octet: 20 },
    ]);
    server = bed.host('server');
    client = bed.host('client');
    uasHost = bed.host('uas');
    kamailio = await startKamailio(bed, server, { sipha: true, publicIp: server.ip });
    sidecar = await startSidecar(server);
    target = `${server.ip}:5060`;
  });

  after(async () => {
    await bed?.destroy();
  });

  it('registers 1000 distinct users over UDP, each bound at the client address', async () => {
    const aors = users('udp', 1000);
    const r = await runSipp(bed, client, { scenario: 'register.xml', target, calls: 1000, rate: 500, users: aors, timeoutS: 30 });
    assert.equal(r.failed, 0, r.output.slice(-2000));
    assert.equal(r.successful, 1000);
    const found = lookupAll(kamailio, aors);
    assert.equal(found.size, 1000);
    for (const b of found.values()) {
      assert.equal(b.received, `sip:${client.ip}:5060`, `received of ${b.aor}`);
      assert.ok(b.address.includes(`@${client.ip}:5060`), `contact of ${b.aor}: ${b.address}`);
    }
  });

  it('registers 1000 distinct users over TCP, received names the TCP flow', async () => {
    const aors = users('tcp', 1000);
    const r = await runSipp(bed, client, {
      scenario: 'register.xml',
      target,
      transport: 't1',
      localPort: 5070,
      calls: 1000,
      rate: 500,
      users: aors,
      timeoutS: 30,
    });
    assert.equal(r.failed, 0, r.output.slice(-2000));
    assert.equal(r.successful, 1000);
    const found = lookupAll(kamailio, aors);
    assert.equal(found.size, 1000);
    const receivedSet = new Set([...found.values()].map((b) => b.received));
    // sipp -t t1 uses one TCP connection: every binding names that one flow.
    assert.equal(receivedSet.size, 1, [...receivedSet].join(' '));
    const [received] = receivedSet;
    assert.match(received as string, new RegExp(`^sip:${client.ip.replaceAll('.', '\\.')}:\\d+;transport=tcp$`));
    assert.equal(usrlocStat(kamailio, 'registered_users'), 2000);
  });

  it('answers OPTIONS through the sidecar', async () => {
    const r = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 200, rate: 200, timeoutS: 20 });
    assert.equal(r.failed, 0);
    assert.equal(r.successful, 200);
  });

  it('completes 200 calls (INVITE/180/200/ACK, hold re-INVITE, BYE) to a registered UAS, through a malformed burst', async () => {
    const reg = await runSipp(bed, uasHost, {
      scenario: 'register.xml',
      target,
      calls: 1,
      rate: 10,
      users: ['uas'],
      timeoutS: 10,
    });
    assert.equal(reg.successful, 1);
    const uas = startUas(uasHost);
    const droppedBefore = sumDropped(sidecar);
    const burstCount = 450;
    const calls = runSipp(bed, client, {
      scenario: 'uac-call.xml',
      target,
      calls: 200,
      rate: 40,
      limit: 200,
      service: 'uas',
      holdMs: 1000,
      timeoutS: 60,
    });
    // Malformed datagrams from another port of the same client, while calls run.
    const burst = client.run(process.execPath, [GARBAGE, server.ip, '5060', String(burstCount), '2']);
    const r = await calls;
    await bed.stop(uas.child);
    assert.equal(burst.trim(), `sent ${burstCount}`);
    assert.equal(r.failed, 0, r.output.slice(-3000));
    assert.equal(r.successful, 200);
    // Every malformed datagram was counted as dropped, and nothing else was.
    assert.equal(sumDropped(sidecar) - droppedBefore, burstCount);
  });
});

function sumDropped(s: Sidecar): number {
  let total = 0;
  for (const reason of REJECT_REASONS) {
    total += s.metric('sipha_messages_dropped_total', { path: 'inbound', reason });
  }
  return total;
}
