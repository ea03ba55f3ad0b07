/**
 * Faults around the happy path (issue 8), each on the netns bed with real
 * Kamailio and real sidecar processes: what a kubelet, an OOM kill, a
 * restarted server or a stalled stream does to a pair, and that the pair
 * ends with exactly one master, nothing lost and nothing held.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { dropInput, heal, partition, removeDrop } from '../lib/firewall.ts';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import type { NetBed } from '../lib/netbed.ts';
import { holdsVip, type PairNode, pairBed, role, roleStory, twoMasterMs, VIP } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';
import { hangMainThread } from '../lib/sidecar.ts';
import { runSipp, startUas, users } from '../lib/sipp.ts';

const target = `${VIP}:5060`;

describe('a crashed sidecar restarted beside its running Kamailio (OOM kill, kubelet restart)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('the restarted sidecar drops the stale VIP, rejoins as backup, and a later failover back to it serves', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a: a0, b, client } = pb;
    const aors = users('crash', 200);
    const reg = await runSipp(bed, client, { scenario: 'register.xml', target, calls: 200, rate: 400, users: aors });
    assert.equal(reg.successful, 200);

    // The master's sidecar dies as an OOM kill does: no clean-up, the VIP stays on a's interface.
    await bed.stop(a0.sidecar.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over from the dead sidecar');
    const a = await a0.restartSidecar();
    await until(() => role(a) === 'backup', 10000, 'the restarted sidecar rejoins as backup');
    await until(() => !holdsVip(a), 2000, 'the restarted sidecar removed the stale VIP');
    assert.ok(holdsVip(b), 'b holds the VIP');
    await until(() => usrlocStat(a.kamailio, 'registered_users') === 200, 10000, 'a has the registrations again');

    // Fail back: b's Kamailio dies, the restarted sidecar must take over (not crash on the address).
    await bed.stop(b.kamailio.child, 'SIGKILL');
    await until(() => role(a) === 'master', 5000, 'a takes over again');
    assert.equal(a.sidecar.child.exitCode, null, 'the sidecar is still running');
    await until(() => holdsVip(a) && !holdsVip(b), 3000, 'exactly one host holds the VIP');
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10, 'the VIP answers');
    assert.equal(lookupAll(a.kamailio, aors).size, 200, 'no registration lost');
  });

  it('a dead sidecar that nobody restarts loses the VIP by itself (address lifetime, not forever)', async () => {
    await bed?.destroy();
    const pb = await pairBed();
    bed = pb.bed;
    await bed.stop(pb.a.sidecar.child, 'SIGKILL');
    await until(() => role(pb.b) === 'master', 5000, 'b takes over');
    // Lifetime 1 s, plus up to 1 s of the kernel's expiry check (the figure is stale_vip_ms in the faults bench).
    await until(() => !holdsVip(pb.a), 3000, 'the VIP expired on the dead sidecar host');
    assert.ok(holdsVip(pb.b));
  });
});

describe('a backup whose Kamailio restarted (item 2)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('the restarted server is resynced before the backup claims to be in sync, and a master crash then loses nothing', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b: b0, client } = pb;
    const aors = users('brst', 300);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 300, rate: 500, users: aors })).successful,
      300,
    );
    await until(() => usrlocStat(b0.kamailio, 'registered_users') === 300, 5000, 'backup has them');
    // Only the backup's Kamailio restarts (as a kubelet restarts a crashed server container): empty location table.
    await bed.stop(b0.kamailio.child, 'SIGKILL');
    const b = await b0.restartKamailio();
    await until(() => role(b) === 'backup', 10000, 'b is backup again');
    await until(() => b.sidecar.metric('sipha_in_sync') === 1 && a.sidecar.metric('sipha_in_sync') === 1, 10000, 'in sync again');
    // In sync means every registration was written to the restarted server's live connection
    // (what an ack means); Kamailio stores them within moments, not necessarily by the ack.
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 300, 2000, 'the restarted server holds every registration');
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    assert.equal(lookupAll(b.kamailio, aors).size, 300, 'no registration lost at the next failover');
  });
});

describe('a stalled replication stream while heartbeats flow (item 3)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it("the master's egress is released after the ack deadline, the backup is out of sync, and the stream resyncs when it heals", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client } = pb;
    const first = users('stall', 100);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 100, rate: 200, users: first })).successful,
      100,
    );
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 5000, 'in sync before the stall');
    // A black hole for the replication port only (firewall, MTU): heartbeats still say "backup, server up".
    dropInput(b.host, 'stall', 'tcp dport 5063');
    const more = users('held', 50);
    const r = await runSipp(bed, client, { scenario: 'register.xml', target, calls: 50, rate: 50, users: more, timeoutS: 30 });
    assert.equal(
      r.successful,
      50,
      `registrations during the stall are answered (held at most the deadline): ${r.output.slice(-1500)}`,
    );
    // Past the deadline the backup is slow (out of sync, nothing held for it); with no ack at all
    // for 4 deadlines (2 s) it is stuck: the stream ends, to resync once it can.
    assert.equal(a.sidecar.metric('sipha_in_sync'), 0, 'the master says its backup is out of sync');
    await until(
      () => a.sidecar.metric('sipha_replication_resyncs_total', { reason: 'ack-deadline' }) >= 1,
      5000,
      'the stall ends the stream',
    );
    assert.equal(a.sidecar.metric('sipha_in_sync'), 0, 'still out of sync while the stream is cut');
    assert.equal(role(a), 'master');
    assert.equal(role(b), 'backup', 'no takeover: the master is healthy');
    removeDrop(b.host, 'stall');
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 10000, 'resynced after the heal');
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 150, 5000, 'the backup holds all 150');
  });
});

describe('state that came by burst is passed on by burst (two rejoins in a row, as on the cluster)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('a backup whose sidecar restarted gets the burst, takes over, and the next empty backup gets every registration from it', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a: a0, b: b0, client } = pb;
    const aors = users('hop', 300);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 300, rate: 500, users: aors })).successful,
      300,
    );
    await until(() => usrlocStat(b0.kamailio, 'registered_users') === 300, 5000, 'backup has them');
    // b's sidecar restarts beside its running Kamailio (as the kubelet restarts a killed sidecar
    // container): it holds nothing, its server holds everything; the burst fills its cache.
    await bed.stop(b0.sidecar.child, 'SIGKILL');
    const b = await b0.restartSidecar();
    await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 15000, 'b rejoined in sync');
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 300, 5000, 'b got them by burst');
    // a dies; b serves with what it got by burst; a comes back empty and must get all of it from b.
    await bed.stop(a0.sidecar.child, 'SIGKILL');
    await bed.stop(a0.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    const a = await a0.restart();
    await until(() => role(a) === 'backup' && a.sidecar.metric('sipha_in_sync') === 1, 15000, 'a rejoined in sync');
    await until(
      () => usrlocStat(a.kamailio, 'registered_users') === 300,
      5000,
      'a got every registration by burst from b',
      () => `a holds ${usrlocStat(a.kamailio, 'registered_users')}; b caches ${b.sidecar.metric('sipha_state_cache_entries')}`,
    );
  });
});

describe('the cluster e2e fault sequence on the bed: every rejoin gets the whole state', { timeout: 300_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  // Failed before: at sidecar-kill the restarted sidecar's cache held 0 (its server answered the
  // replays 400), so at node-crash it replayed nothing and the next backup held 0 of 300.
  it('kamailio-kill, pod-delete, sidecar-kill, node-crash of the master in a row, 12 s apart: each new backup gets all 300', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const aors = users('seq', 300);
    assert.equal(
      (await runSipp(bed, pb.client, { scenario: 'register.xml', target, calls: 300, rate: 500, users: aors })).successful,
      300,
    );
    let [m, k] = [pb.a, pb.b];
    const tookOver = async (next: PairNode, fault: string) => {
      await until(() => role(next) === 'master', 5000, `${fault}: the backup takes over`);
      assert.equal(lookupAll(next.kamailio, aors).size, 300, `${fault}: nothing lost at the takeover`);
    };
    const rejoined = async (n: PairNode, fault: string) => {
      await until(() => role(n) === 'backup' && n.sidecar.metric('sipha_in_sync') === 1, 15000, `${fault}: rejoined in sync`);
      await until(() => usrlocStat(n.kamailio, 'registered_users') === 300, 5000, `${fault}: its server holds all 300`);
      // What a pod's cache holds is what it replays when it is master and the next backup joins.
      await until(
        () => n.sidecar.metric('sipha_state_cache_entries') === 300,
        5000,
        `${fault}: its cache holds all 300`,
        () =>
          n.sidecar
            .scrape()
            .split('\n')
            .filter((l) => /^sipha_(state_cache|replication_(applied|resyncs))/.test(l))
            .join('\n'),
      );
      // Longer than the cache's prune period (10 s), as between the cluster e2e's faults.
      await sleep(12_000);
    };
    // kamailio-kill: the master's server dies; the kubelet restarts it (empty) beside its sidecar.
    await bed.stop(m.kamailio.child, 'SIGKILL');
    await tookOver(k, 'kamailio-kill');
    m = await m.restartKamailio();
    await rejoined(m, 'kamailio-kill');
    [m, k] = [k, m];
    // pod-delete: both containers of the master go, a new pod starts empty.
    await bed.stop(m.sidecar.child, 'SIGTERM');
    await bed.stop(m.kamailio.child, 'SIGKILL');
    await tookOver(k, 'pod-delete');
    m = await m.restart();
    await rejoined(m, 'pod-delete');
    [m, k] = [k, m];
    // sidecar-kill: the master's sidecar dies; the kubelet restarts it beside its running server.
    await bed.stop(m.sidecar.child, 'SIGKILL');
    await tookOver(k, 'sidecar-kill');
    m = await m.restartSidecar();
    await rejoined(m, 'sidecar-kill');
    [m, k] = [k, m];
    // node-crash: everything of the master goes at once; it comes back empty.
    await bed.stop(m.sidecar.child, 'SIGKILL');
    await bed.stop(m.kamailio.child, 'SIGKILL');
    await tookOver(k, 'node-crash');
    m = await m.restart();
    await rejoined(m, 'node-crash');
  });
});

describe('registrations removed while the backup was out of reach', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('are removed on the backup by the resync too (same Call-ID or a new one), not kept or brought back', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client } = pb;
    const aors = users('bind', 50);
    // The n-th user of a run gets Call-ID "n-<boot>@sipha": the same user, the same position, the same boot: the same Call-ID.
    const reg = (lines: string[], boot: string) =>
      runSipp(bed, client, {
        scenario: 'register-binding.xml',
        target,
        calls: lines.length,
        rate: 100,
        users: lines,
        callIdFormat: `%u-${boot}@sipha`,
      });
    const first = await reg(
      aors.map((u) => `${u};1;3600`),
      'boot1',
    );
    assert.equal(first.successful, 50, first.errors);
    await until(() => lookupAll(b.kamailio, aors).size === 50, 5000, 'the backup holds the 50');
    // The stream stalls; meanwhile 10 phones unregister (same Call-ID) and 10 others after a reboot (new Call-ID).
    dropInput(b.host, 'stall', 'tcp dport 5063');
    const same = await reg(
      aors.slice(0, 10).map((u) => `${u};2;0`),
      'boot1',
    );
    const rebooted = await reg(
      aors.slice(10, 20).map((u) => `${u};1;0`),
      'boot2',
    );
    assert.equal(same.successful + rebooted.successful, 20);
    assert.equal(lookupAll(a.kamailio, aors).size, 30, 'the master removed the 20');
    await until(() => a.sidecar.metric('sipha_in_sync') === 0, 5000, 'the master sees the backup out of sync');
    removeDrop(b.host, 'stall');
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 10000, 'resynced');
    await until(
      () => lookupAll(b.kamailio, aors).size === 30,
      5000,
      'the backup holds what the master holds',
      () => `the backup holds ${lookupAll(b.kamailio, aors).size}`,
    );
    // And the next failover serves exactly the master's bindings.
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    assert.deepEqual([...lookupAll(b.kamailio, aors).keys()].sort(), aors.slice(20).sort());
  });
});

describe('a hung sidecar main thread (item 7)', { timeout: 120_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('the heartbeat worker stops beating for a hung main thread, so the peer takes over long before a liveness probe', async () => {
    const pb = await pairBed({}, { nodeArgs: ['--inspect=127.0.0.1:9229'] });
    bed = pb.bed;
    const { a, b, client } = pb;
    const aors = users('hung', 100);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 100, rate: 200, users: aors })).successful,
      100,
    );
    // 6 s of a busy main thread in a's sidecar (its heartbeat worker keeps running).
    hangMainThread(a.host, 6000);
    await until(() => role(b) === 'master', 4000, 'b takes over while a is still hung');
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10, 'the VIP answers from b');
    // a wakes up, finds a higher-term master, and steps down: one master, one VIP holder.
    await until(() => role(a) !== 'master' && !holdsVip(a), 10000, 'a stepped down after the hang');
    assert.ok(holdsVip(b));
    assert.equal(lookupAll(b.kamailio, aors).size, 100);
  });
});

describe('a peer rescheduled to a new address (item 1)', { timeout: 120_000 }, () => {
  let bed: NetBed;
  let etc = '';
  after(async () => {
    await bed?.destroy();
    if (etc) rmSync(etc, { recursive: true, force: true });
  });

  it('the master finds the restarted peer at its new address by name; the pair ends with one master and the state resynced', async () => {
    // a knows its peer by name, as a pod knows <pair>-1.<peers Service>: `ip netns exec`
    // bind-mounts /etc/netns/<ns>/hosts over /etc/hosts, so the name resolves per host.
    let hostsFile = '';
    const pb = await pairBed(
      {},
      {
        envFor: (ordinal): Record<string, string> => (ordinal === 0 ? { SIPHA_PEER_ADDRESS: 'peer-b.sipha.test' } : {}),
        beforeStart: (b) => {
          etc = `/etc/netns/${b.host('a').ns}`;
          mkdirSync(etc, { recursive: true });
          hostsFile = `${etc}/hosts`;
          writeFileSync(hostsFile, '127.0.0.1 localhost\n198.18.0.2 peer-b.sipha.test\n');
        },
      },
    );
    bed = pb.bed;
    const { a, b: b0, client } = pb;
    const aors = users('moved', 100);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 100, rate: 200, users: aors })).successful,
      100,
    );
    // b's pod is deleted and recreated on another node: a new address under the same name.
    await Promise.all([bed.stop(b0.kamailio.child, 'SIGKILL'), bed.stop(b0.sidecar.child, 'SIGKILL')]);
    b0.host.run('ip', ['addr', 'del', '198.18.0.2/24', 'dev', 'eth0']);
    b0.host.run('ip', ['addr', 'add', '198.18.0.3/24', 'dev', 'eth0']);
    writeFileSync(hostsFile, '127.0.0.1 localhost\n198.18.0.3 peer-b.sipha.test\n'); // in place: the bind mount sees it
    const b = await b0.restart({ SIPHA_NODE_ADDRESS: '198.18.0.3' });
    await until(() => role(b) === 'backup', 10000, 'b rejoins as backup at its new address');
    assert.equal(role(a), 'master');
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 100, 10000, 'b got the state by burst');
    assert.ok(holdsVip(a) && !holdsVip(b), 'one VIP holder');
    // And the pair works both ways: a failover to the moved peer.
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    assert.equal(lookupAll(b.kamailio, aors).size, 100);
  });
});

describe('planned switchover', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });
  const post = (n: PairNode) =>
    n.host.run('curl', ['-s', '-m', '10', '-X', 'POST', '-w', ' %{http_code}', 'http://127.0.0.1:9090/switchover']).trim();

  it('POST /switchover and SIGTERM of the master both hand over with calls in progress: no call fails, nothing lost', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client, uas } = pb;
    const aors = users('swo', 300);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 300, rate: 300, users: aors })).successful,
      300,
    );
    assert.equal(
      (await runSipp(bed, uas, { scenario: 'register.xml', target, calls: 1, rate: 10, users: ['uas'] })).successful,
      1,
    );
    assert.match(post(b), /refused: not-master\s+409$/, 'a backup refuses');
    const callee = startUas(uas);
    // 20 calls/s for 8 s, 2 s hold: calls are being set up, held and ended across both handovers.
    const calls = runSipp(bed, client, {
      scenario: 'uac-call.xml',
      target,
      calls: 160,
      rate: 20,
      limit: 80,
      service: 'uas',
      holdMs: 2000,
      timeoutS: 60,
    });
    await new Promise((r) => setTimeout(r, 2500));
    assert.match(post(a), /switched over: switchover\s+200$/);
    assert.equal(role(b), 'master');
    await until(() => role(a) === 'backup' && a.sidecar.metric('sipha_in_sync') === 1, 10000, 'a is an in-sync backup');
    await new Promise((r) => setTimeout(r, 1500));
    // The new master is asked to stop (a pod deleted, a drain): it hands back first.
    await bed.stop(b.sidecar.child, 'SIGTERM');
    await until(() => role(a) === 'master', 5000, 'a serves again');
    const r = await calls;
    await bed.stop(callee.child);
    assert.equal(r.failed, 0, r.output.slice(-3000));
    assert.equal(r.successful, 160);
    assert.equal(lookupAll(a.kamailio, aors).size, 300, 'no registration lost');
    assert.equal(a.sidecar.metric('sipha_role_effect_failures_total'), 0);
  });
});

describe('a witness decides when the two sides cannot hear each other (item 5)', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });
  const masters = (...n: PairNode[]) => n.filter((x) => role(x) === 'master').length;

  it('a full partition of the two nodes (clients and witness reach both) ends with one master, and one after the heal', async () => {
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a, b, client } = pb;
    const aors = users('part', 100);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 100, rate: 200, users: aors })).successful,
      100,
    );
    partition(a.host, b.host);
    // Without a witness both would serve for the whole partition. With it, whichever side holds
    // the witness lease serves (the first to claim); the other never serves or stands down.
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < 10; i++) {
      assert.equal(masters(a, b), 1, `one master during the partition\n${roleStory(a, b)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const [winner, loser] = role(a) === 'master' ? [a, b] : [b, a];
    assert.ok(holdsVip(winner) && !holdsVip(loser), 'one VIP holder');
    heal(a.host, b.host);
    await until(
      () => role(loser) === 'backup' && loser.sidecar.metric('sipha_in_sync') === 1,
      10000,
      'the other side is an in-sync backup',
    );
    assert.equal(masters(a, b), 1);
    assert.equal(lookupAll(winner.kamailio, aors).size, 100);
  });

  it('a backup cut off from both its master and the witness never serves, nor after the heal; the master keeps serving', async () => {
    await bed?.destroy();
    // Heartbeats every 100 ms: after the heal the witness's answer to the backup's next claim
    // (every 20 ms) surely arrives before the master's next heartbeat. Both come back together;
    // the grant must not make the backup, whose view of the master is stale, take over.
    const pb = await pairBed({ SIPHA_HEARTBEAT_INTERVAL_MS: '100' }, { witness: true });
    bed = pb.bed;
    const { a, b, client } = pb;
    dropInput(b.host, 'isolated', `ip saddr { ${a.host.ip}, ${bed.host('witness').ip} }`);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(role(a), 'master', `the master serves on\n${roleStory(a, b)}`);
    assert.notEqual(role(b), 'master', 'the isolated backup did not self-elect');
    assert.ok(b.sidecar.metric('sipha_witness_claims_total', { verdict: 'unreachable' }) >= 1, 'it asked the witness');
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10);
    removeDrop(b.host, 'isolated');
    await sleep(1500);
    assert.equal(role(a), 'master', `the master serves on after the heal\n${roleStory(a, b)}`);
    await until(
      () => role(b) === 'backup',
      5000,
      'b is backup again',
      () => `b is ${role(b)}\n${roleStory(a, b)}`,
    );
    assert.ok(!/"to":"master"/.test(roleStory(b)), `b never took over\n${roleStory(a, b)}`);
  });

  // Intermittent in session 8 (about 1 run in 3): the master's quiet claim never went out,
  // because the heartbeat worker's quiet timer could fire a fraction of a millisecond early and
  // then said nothing for that silence (heartbeat-ready.test.ts 'each time'; fixed in session 9).
  it('a lease the peer took during an earlier silence does not make the master resign when the peer dies', async () => {
    await bed?.destroy();
    // A 4 s lease, so that it surely still runs when a dies below.
    const pb = await pairBed({ SIPHA_WITNESS_TTL_MS: '4000' }, { witness: true });
    bed = pb.bed;
    const { a } = pb;
    // b restarts (a holds the witness lease while b is silent), then takes over by a switchover...
    await bed.stop(pb.b.sidecar.child, 'SIGTERM');
    await until(() => a.sidecar.metric('sipha_witness_claims_total', { verdict: 'granted' }) >= 1, 3000, 'a holds the lease');
    const b = await pb.b.restartSidecar();
    await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'b in sync');
    assert.match(a.host.run('curl', ['-s', '-X', 'POST', 'http://127.0.0.1:9090/switchover']), /switched over/);
    // ...and a dies while its lease (term 2) still runs: b (term 3) must not resign over it.
    await bed.stop(a.sidecar.child, 'SIGKILL');
    for (let i = 0; i < 25; i++) {
      assert.equal(role(b), 'master', roleStory(b));
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(b.sidecar.metric('sipha_witness_claims_total', { verdict: 'refused' }) >= 1, 'the stale lease was seen');
    await until(
      () => b.sidecar.metric('sipha_witness_claims_total', { verdict: 'granted' }) >= 1,
      5000,
      'the stale lease ran out and b holds it',
    );
    assert.equal(role(b), 'master');
  });

  it('both heartbeat paths cut both ways while both reach the witness: the master keeps serving, the backup never serves', async () => {
    await bed?.destroy();
    // 100 ms heartbeats: the two sides' loss detections fall up to one interval apart either
    // way, so which side asks the witness first is a coin toss unless the master asks earlier.
    const pb = await pairBed({ SIPHA_HEARTBEAT_INTERVAL_MS: '100' }, { witness: true });
    bed = pb.bed;
    const { a, b } = pb;
    // Both heartbeat paths: the UDP port and the replication stream (5063, both ways).
    const cut = (h: PairNode['host']) => {
      dropInput(h, 'hbcut', 'th dport { 5062, 5063 }');
      dropInput(h, 'streamcut', 'tcp sport 5063');
    };
    const mend = (h: PairNode['host']) => {
      removeDrop(h, 'hbcut');
      removeDrop(h, 'streamcut');
    };
    for (let i = 0; i < 3; i++) {
      cut(a.host);
      cut(b.host);
      await sleep(1500);
      assert.equal(role(a), 'master', `the master serves on through the cut\n${roleStory(a, b)}`);
      mend(a.host);
      mend(b.host);
      await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'b an in-sync backup');
    }
    assert.ok(!/"to":"master"/.test(roleStory(b)), `b never took over\n${roleStory(a, b)}`);
    assert.equal(twoMasterMs(a, b), 0, roleStory(a, b));
    // The cut was silence on both sides: a held the lease, b asked and was refused.
    assert.ok(a.sidecar.metric('sipha_witness_claims_total', { verdict: 'granted' }) >= 3);
    assert.ok(b.sidecar.metric('sipha_witness_claims_total', { verdict: 'refused' }) >= 3);
  });

  it('a master cut off from both its peer and the witness stops serving before the backup may take over', async () => {
    await bed?.destroy();
    const pb = await pairBed({ SIPHA_HEARTBEAT_INTERVAL_MS: '100' }, { witness: true });
    bed = pb.bed;
    const { a, b, client } = pb;
    const w = bed.host('witness');
    // a still reaches its clients (they may keep sending to it): only its peer and the witness are gone.
    dropInput(a.host, 'isolated', `ip saddr { ${b.host.ip}, ${w.ip} }`);
    dropInput(b.host, 'isolated', `ip saddr ${a.host.ip}`);
    dropInput(w, 'isolated', `ip saddr ${a.host.ip}`);
    await until(
      () => role(b) === 'master',
      5000,
      'b takes over with the witness grant',
      () => roleStory(a, b),
    );
    await sleep(1500);
    assert.notEqual(role(a), 'master', `a stood down\n${roleStory(a, b)}`);
    // Both served at once for not one millisecond: a stopped before b's grant could come.
    assert.equal(twoMasterMs(a, b), 0, roleStory(a, b));
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10, 'the pair serves (b)');
    for (const h of [a.host, b.host, w]) removeDrop(h, 'isolated');
    await until(
      () => role(a) === 'backup',
      10000,
      'a rejoins as backup',
      () => roleStory(a, b),
    );
    assert.equal(role(b), 'master');
  });

  it("the master's UDP heartbeats lost one way: the backup hears them on the replication stream, nobody switches", async () => {
    await bed?.destroy();
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a, b } = pb;
    // A flood or a firewall on the heartbeat port alone is one path gone, not a dead master.
    dropInput(b.host, 'hbcut', 'udp dport 5062');
    for (let i = 0; i < 15; i++) {
      await sleep(100);
      assert.equal(role(a), 'master', `a serves on\n${roleStory(a, b)}`);
      assert.equal(role(b), 'backup', `b does not take over\n${roleStory(a, b)}`);
    }
    assert.ok(b.sidecar.metric('sipha_heartbeats_heard_total', { path: 'stream' }) > 0, "b hears a's beats on the stream");
    removeDrop(b.host, 'hbcut');
    assert.equal(twoMasterMs(a, b), 0);
  });

  // CI, session 13, as pods: the backup stopped hearing the master for 107 ms while the master
  // still heard it; the master, whose peer was never quiet, held no lease, the witness granted
  // the backup, and both served for 63 ms. Each beat now says how long ago its sender last
  // heard the peer; a master told it is unheard claims at once, so the backup is refused.
  it('both heartbeat paths lost one way, master to backup, while both reach the witness: the master keeps serving, the backup never serves', async () => {
    await bed?.destroy();
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a, b, client } = pb;
    // Everything a sends to b on both heartbeat paths (UDP beats, the replication stream, which
    // carries beats too); b's beats still reach a by UDP.
    const cut = () => {
      dropInput(b.host, 'oneway', `ip saddr ${a.host.ip} th dport { 5062, 5063 }`);
      dropInput(b.host, 'onewaystream', `ip saddr ${a.host.ip} tcp sport 5063`);
    };
    const mend = () => {
      removeDrop(b.host, 'oneway');
      removeDrop(b.host, 'onewaystream');
    };
    // Each cut starts with no lease held: while b is not in sync a holds one (holdWhile), and b
    // would be refused with or without the fix. In sync, that lease runs out within its ttl (1 s).
    const settled = async () => {
      await until(
        () => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1,
        10000,
        'b an in-sync backup',
        () => roleStory(a, b),
      );
      await sleep(1500);
    };
    const toldUnheard = () => (a.sidecar.output().match(/does not hear our heartbeats/g) ?? []).length;
    await settled();
    for (let i = 0; i < 3; i++) {
      const told = toldUnheard();
      cut();
      await sleep(1500);
      assert.equal(role(a), 'master', `the master serves on through the cut\n${roleStory(a, b)}`);
      assert.ok(toldUnheard() > told, `a was told it is unheard (cut ${i + 1})\n${roleStory(a, b)}`);
      mend();
      await settled();
    }
    assert.ok(!/"to":"master"/.test(roleStory(b)), `b never took over\n${roleStory(a, b)}`);
    assert.equal(twoMasterMs(a, b), 0, roleStory(a, b));
    // b asked in its silence and was refused (a held the lease).
    assert.ok(b.sidecar.metric('sipha_witness_claims_total', { verdict: 'refused' }) >= 3);
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10, 'the pair serves');
  });

  it('a master whose backup is not in sync holds the lease: that backup starved for 400 ms while the witness is out of reach is no hand-back', async () => {
    // The 30-minute soak (session 11): the old master rejoined after a failover and took the burst;
    // starved of CPU its heartbeats went quiet, the new master did not get the witness's answer
    // within its confirm deadline (70 ms after the last beat) and stood down: a hand-back.
    await bed?.destroy();
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a, b, client } = pb;
    const w = bed.host('witness');
    // The backup out of sync (as while it takes a burst): its replication port black-holed, and
    // traffic the master must replicate; its heartbeats still flow.
    dropInput(b.host, 'stall', 'tcp dport 5063');
    await runSipp(bed, client, { scenario: 'register.xml', target, calls: 20, rate: 50, users: users('hold', 20), timeoutS: 30 });
    await until(() => a.sidecar.metric('sipha_in_sync') === 0, 10000, 'the backup is out of sync');
    await sleep(600); // the master renews its lease every 250 ms meanwhile
    const held = a.sidecar.metric('sipha_witness_claims_total', { verdict: 'granted' });
    assert.ok(held >= 2, `the master holds the lease while its backup is heard (${held} grants)`);
    // Now the backup stops (all its threads: both heartbeat paths) and the witness hears nothing
    // from the master, for 400 ms.
    const pid = b.sidecar.child.pid as number;
    const from = [a.sidecar.output().length, b.sidecar.output().length];
    dropInput(w, 'slow', `ip saddr ${a.host.ip}`);
    process.kill(pid, 'SIGSTOP');
    await sleep(400);
    process.kill(pid, 'SIGCONT');
    removeDrop(w, 'slow');
    await sleep(1500);
    // Not one role change since (a hand-back may come back round to the same roles).
    const changes = [a, b].flatMap((n, i) =>
      n.sidecar
        .output()
        .slice(from[i])
        .split('\n')
        .filter((l) => l.includes('"msg":"role change"')),
    );
    assert.deepEqual(changes, [], `a served on, on the lease it held\n${roleStory(a, b)}`);
    assert.equal(role(a), 'master');
    assert.equal(role(b), 'backup');
    assert.equal(twoMasterMs(a, b), 0);
    removeDrop(b.host, 'stall');
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 10000, 'resynced after the heal');
  });

  it("a new master that lost the witness while its old master's sidecar restarted: the restarted side does not serve with older state", async () => {
    // Seen as pods (session 13, sidecar-kill, 1 run in 4): after the takeover the VIP ended on
    // the old master's node. A hypothesis, reproduced here: the new master, its peer silent while
    // the kubelet restarted that sidecar, could not renew the witness lease (an API server slow to
    // answer) and stood down; the restarted sidecar then saw a resigned peer and took over with
    // what its Kamailio held before, without the registrations the other side took meanwhile.
    await bed?.destroy();
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a: a0, b, client } = pb;
    const w = bed.host('witness');
    const before = users('rst1', 100);
    const meanwhile = users('rst2', 50);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 100, rate: 200, users: before })).successful,
      100,
    );
    await bed.stop(a0.sidecar.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over from the dead sidecar (with the witness grant)');
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 50, rate: 100, users: meanwhile })).successful,
      50,
      'registered with b while a has no sidecar',
    );
    dropInput(w, 'cut', `ip saddr ${b.host.ip}`);
    await until(
      () => role(b) === 'resigned',
      5000,
      'b cannot renew its lease and stands down',
      () => roleStory(b),
    );
    const a = await a0.restartSidecar();
    await until(
      () => masters(a, b) === 1 && [a, b].some((n) => role(n) === 'backup'),
      15000,
      'one master again',
      () => roleStory(a, b),
    );
    const master = role(a) === 'master' ? a : b;
    assert.equal(lookupAll(master.kamailio, before).size, 100);
    assert.equal(
      lookupAll(master.kamailio, meanwhile).size,
      50,
      `the master (${master.host.name}) holds what b took while a had no sidecar\n${roleStory(a, b)}`,
    );
    // b, whose state is the newest, serves again; the restarted side is its backup and gets it all by burst.
    assert.deepEqual([role(b), role(a)], ['master', 'backup'], roleStory(a, b));
    await until(() => lookupAll(a.kamailio, meanwhile).size === 50, 10000, 'the restarted side got them by burst');
    removeDrop(w, 'cut');
  });

  it('with a witness, a dead master host still fails over at once', async () => {
    await bed?.destroy();
    const pb = await pairBed({}, { witness: true });
    bed = pb.bed;
    const { a, b } = pb;
    a.host.run('ip', ['link', 'set', 'eth0', 'down']);
    await Promise.all([bed.stop(a.kamailio.child, 'SIGKILL'), bed.stop(a.sidecar.child, 'SIGKILL')]);
    await until(() => role(b) === 'master', 3000, 'b takes over with the witness grant');
    assert.ok(b.sidecar.metric('sipha_witness_claims_total', { verdict: 'granted' }) >= 1);
  });
});
