/**
 * The pair on the netns bed: the backup's Kamailio holds the master's state
 * (every inbound message replicated), the backup emits nothing, and when the
 * master's Kamailio is killed the backup takes the VIP with every
 * registration and every established call intact.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import { type Host, NetBed } from '../lib/netbed.ts';
import { type PairNode, role, startPair, VIP } from '../lib/pair.ts';
import { until } from '../lib/procs.ts';
import { runSipp, startUas, users } from '../lib/sipp.ts';

describe('failover of a sipha pair (Kamailio killed)', { timeout: 300_000 }, () => {
  let bed: NetBed;
  let client: Host;
  let uasHost: Host;
  let a: PairNode;
  let b: PairNode;
  const target = `${VIP}:5060`;
  const aors = users('ha', 1000);

  before(async () => {
    bed = NetBed.create([
      { name: 'a', octet: 1 },
      { name: 'b', octet: 2 },
      { name: 'client', octet: 10 },
      { name: 'uas', octet: 20 },
    ]);
    client = bed.host('client');
    uasHost = bed.host('uas');
    [a, b] = await startPair(bed, bed.host('a'), bed.host('b'));
  });
  after(async () => {
    await bed?.destroy();
  });

  it('replicates registrations: the backup Kamailio holds all 1000, and the backup sent nothing', async () => {
    const r = await runSipp(bed, client, { scenario: 'register.xml', target, calls: 1000, rate: 500, users: aors, timeoutS: 30 });
    assert.equal(r.failed, 0, r.output.slice(-2000));
    assert.equal(r.successful, 1000);
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 1000, 5000, 'backup has 1000 users');
    const onB = lookupAll(b.kamailio, aors);
    assert.equal(onB.size, 1000);
    for (const x of onB.values()) assert.equal(x.received, `sip:${client.ip}:5060`);
    assert.equal(b.sidecar.metric('sipha_messages_total', { path: 'to_client' }), 0, 'backup emitted nothing');
    assert.ok(
      b.sidecar.metric('sipha_messages_dropped_total', { path: 'egress', reason: 'role-backup' }) >= 1000,
      'backup withheld its replies',
    );
  });

  it('kill -9 of the master Kamailio: the backup takes over, registrations kept, established calls end with BYE answered 200', async () => {
    const reg = await runSipp(bed, uasHost, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] });
    assert.equal(reg.successful, 1);
    const uas = startUas(uasHost);
    // 40 calls at 10/s, each holding 6 s: all are established when the master dies.
    const calls = runSipp(bed, client, {
      scenario: 'uac-call.xml',
      target,
      calls: 40,
      rate: 10,
      limit: 40,
      service: 'uas',
      holdMs: 6000,
      timeoutS: 60,
    });
    await new Promise((r) => setTimeout(r, 4500));
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    const r = await calls;
    await bed.stop(uas.child);
    assert.equal(r.failed, 0, r.output.slice(-3000));
    assert.equal(r.successful, 40);
    assert.equal(role(a), 'resigned');
    const onB = lookupAll(b.kamailio, [...aors, 'uas']);
    assert.equal(onB.size, 1001, 'every registration survived');
    assert.ok(b.sidecar.metric('sipha_term', {}) > a.sidecar.metric('sipha_term', {}), 'the takeover raised the term');
  });
});
