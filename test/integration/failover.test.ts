/**
 * The pair on the netns bed: the backup's Kamailio holds the master's state
 * (every inbound message replicated), the backup emits nothing, and when the
 * master's Kamailio is killed the backup takes the VIP with every
 * registration and every established call intact.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { countPackets, readSip, startCapture } from '../lib/capture.ts';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import { type Host, NetBed } from '../lib/netbed.ts';
import { digests, type PairNode, pairBed, role, roleStory, startPair, VIP } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';
import { callsToUas, runSipp, startUas, users } from '../lib/sipp.ts';

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
    [a, b] = await startPair(bed, bed.host('a'), bed.host('b'), {}, { digest: true });
  });
  after(async () => {
    await bed?.destroy();
  });

  it('replicates registrations: the backup Kamailio holds all 1000, and the backup sent nothing', async () => {
    const cap = await startCapture(bed, b.host, `src host ${b.host.ip} and port 5060`);
    const r = await runSipp(bed, client, { scenario: 'register.xml', target, calls: 1000, rate: 500, users: aors, timeoutS: 30 });
    assert.equal(r.failed, 0, r.output.slice(-2000));
    assert.equal(r.successful, 1000);
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 1000, 5000, 'backup has 1000 users');
    const onB = lookupAll(b.kamailio, aors);
    assert.equal(onB.size, 1000);
    for (const x of onB.values()) assert.equal(x.received, `sip:${client.ip}:5060`);
    assert.equal(
      b.sidecar.metric('sipha_messages_total', { path: 'to_client' }),
      0,
      `backup emitted nothing\n${roleStory(a, b)}`,
    );
    assert.equal(readSip(await cap.stop()).length, 0, 'tcpdump on the backup saw no SIP packet from it');
    assert.ok(
      b.sidecar.metric('sipha_messages_dropped_total', { path: 'egress', reason: 'role-backup' }) >= 1000,
      'backup withheld its replies',
    );
  });

  it("the backup's Kamailio produced byte-identical replies and relayed requests (same state, not just same messages)", async () => {
    const r = await callsToUas(bed, client, uasHost, target, 20);
    assert.equal(r.successful, 20);
    let sent: string[] = [];
    let withheld: string[] = [];
    await until(
      () => {
        sent = digests(a, 'sent');
        withheld = digests(b, 'withheld');
        return sent.length > 0 && sent.length === withheld.length;
      },
      5000,
      'digest files complete',
    );
    // 1000 REGISTER 200s, the UAS's 200, and per call: 100/180/200 replies and the relayed INVITE/ACK/re-INVITE/BYE...
    assert.ok(sent.length > 1000 + 20 * 8, `only ${sent.length} egress messages\n${roleStory(a, b)}`);
    assert.deepEqual(withheld, sent);
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

describe('failover of a sipha pair (master host down)', { timeout: 300_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('link down + processes killed on the master: the backup takes the VIP with registrations and calls intact', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b } = pb;
    const client = bed.host('client');
    const target = `${VIP}:5060`;
    const aors = users('hd', 300);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 300, rate: 300, users: aors })).successful,
      300,
    );
    assert.equal(
      (await runSipp(bed, bed.host('uas'), { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] })).successful,
      1,
    );
    const uas = startUas(bed.host('uas'));
    const calls = runSipp(bed, client, {
      scenario: 'uac-call.xml',
      target,
      calls: 20,
      rate: 10,
      limit: 20,
      service: 'uas',
      holdMs: 5000,
      timeoutS: 60,
    });
    await new Promise((r) => setTimeout(r, 3000));
    a.host.run('ip', ['link', 'set', 'eth0', 'down']);
    await Promise.all([bed.stop(a.kamailio.child, 'SIGKILL'), bed.stop(a.sidecar.child, 'SIGKILL')]);
    await until(() => role(b) === 'master', 5000, 'b takes over after missed heartbeats');
    const r = await calls;
    await bed.stop(uas.child);
    assert.equal(r.failed, 0, r.output.slice(-3000));
    assert.equal(r.successful, 20);
    assert.equal(lookupAll(b.kamailio, aors).size, 300);
    assert.ok(b.host.run('ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0']).includes(` ${VIP}/32`), 'b holds the VIP');
  });
});

describe('failover of a sipha pair (master Kamailio hung)', { timeout: 120_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('a frozen Kamailio (SIGSTOP: sockets open, no answers) is caught by the OPTIONS probe and the backup takes over', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b } = pb;
    const aors = users('hung', 100);
    assert.equal(
      (
        await runSipp(bed, bed.host('client'), {
          scenario: 'register.xml',
          target: `${VIP}:5060`,
          calls: 100,
          rate: 200,
          users: aors,
        })
      ).successful,
      100,
    );
    const pid = a.kamailio.child.pid as number;
    process.kill(-pid, 'SIGSTOP');
    try {
      await until(() => role(b) === 'master', 10000, 'b takes over from a hung server');
      assert.equal(role(a), 'resigned');
      const r = await runSipp(bed, bed.host('client'), { scenario: 'options.xml', target: `${VIP}:5060`, calls: 20, rate: 20 });
      assert.equal(r.successful, 20, 'the VIP answers again');
      assert.equal(lookupAll(b.kamailio, aors).size, 100);
    } finally {
      process.kill(-pid, 'SIGCONT');
    }
  });
});

describe('a backup that joins late gets the state by burst', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it("the backup is killed and restarted empty, receives the master's registrations as a burst, and keeps them through a takeover", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b: b0, client } = pb;
    const aors = users('late', 500);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target: `${VIP}:5060`, calls: 500, rate: 500, users: aors }))
        .successful,
      500,
    );
    // The backup dies (both processes) and comes back with an empty location table.
    await Promise.all([bed.stop(b0.kamailio.child, 'SIGKILL'), bed.stop(b0.sidecar.child, 'SIGKILL')]);
    const b = await b0.restart();
    await until(() => role(b) === 'backup', 10000, 'the restarted node rejoins as backup');
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 500, 10000, 'burst applied');
    // Registrations made after the rejoin arrive through the live stream.
    const more = users('later', 100);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target: `${VIP}:5060`, calls: 100, rate: 100, users: more }))
        .successful,
      100,
    );
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 600, 5000, 'live stream applied');
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    assert.equal(lookupAll(b.kamailio, [...aors, ...more]).size, 600);
  });
});

describe('a backup that joins late, with digest authentication (the burst outlives the nonces)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it("registrations authenticated longer ago than the server's nonce lifetime still reach the restarted backup", async () => {
    // Nonces live 2 s here (300 s by default): the burst replays REGISTERs whose nonce the
    // backup's server would call stale, and asking the client again is not possible.
    const kamailio = {
      defines: ['WITH_AUTH'],
      env: { SIPHA_AUTH_PASSWORD: 'demo-password', SIPHA_AUTH_SECRET: 'pair-shared-secret', SIPHA_AUTH_NONCE_EXPIRE: '2' },
    };
    const pb = await pairBed({}, { kamailio });
    bed = pb.bed;
    const { a, b: b0, client } = pb;
    const aors = users('authlate', 50);
    const ok = await runSipp(bed, client, {
      scenario: 'register-auth.xml',
      target: `${VIP}:5060`,
      calls: 50,
      rate: 100,
      users: aors,
    });
    assert.equal(ok.successful, 50, ok.errors);
    await until(() => lookupAll(b0.kamailio, aors).size === 50, 5000, 'the live stream applied');
    await sleep(3000); // every nonce used above is stale now
    await Promise.all([bed.stop(b0.kamailio.child, 'SIGKILL'), bed.stop(b0.sidecar.child, 'SIGKILL')]);
    const b = await b0.restart();
    await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'the restarted node is in sync');
    await until(
      () => lookupAll(b.kamailio, aors).size === 50,
      5000,
      'the burst applied',
      () => `the backup holds ${lookupAll(b.kamailio, aors).size} of 50`,
    );
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    assert.equal(lookupAll(b.kamailio, aors).size, 50);
  });
});

describe('NAT keepalives come from the master only', { timeout: 120_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('registered UDP clients get double-CRLF keepalives from the VIP; the backup sends none', async () => {
    const pb = await pairBed({ SIPHA_NAT_KEEPALIVE_MS: '300' });
    bed = pb.bed;
    const { a, b } = pb;
    const client = bed.host('client');
    assert.equal(
      (
        await runSipp(bed, client, {
          scenario: 'register.xml',
          target: `${VIP}:5060`,
          calls: 5,
          rate: 50,
          users: users('nat', 5),
        })
      ).successful,
      5,
    );
    const ping = 'udp and udp[8:4] = 0x0d0a0d0a';
    const atClient = await startCapture(bed, client, `${ping} and src host ${VIP} and src port 5060 and dst port 5060`);
    const fromBackup = await startCapture(bed, b.host, `${ping} and src host ${b.host.ip}`);
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(countPackets(await atClient.stop()) >= 2, 'keepalives reach the client from the VIP');
    assert.equal(countPackets(await fromBackup.stop()), 0, 'the backup pings nobody');
    assert.ok(a.sidecar.metric('sipha_messages_total', { path: 'nat_keepalive' }) >= 2);
    assert.equal(b.sidecar.metric('sipha_messages_total', { path: 'nat_keepalive' }), 0);
  });
});
