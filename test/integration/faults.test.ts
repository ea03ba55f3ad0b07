/**
 * Faults around the happy path (issue 8), each on the netns bed with real
 * Kamailio and real sidecar processes: what a kubelet, an OOM kill, a
 * restarted server or a stalled stream does to a pair, and that the pair
 * ends with exactly one master, nothing lost and nothing held.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import type { NetBed } from '../lib/netbed.ts';
import { holdsVip, pairBed, role, VIP } from '../lib/pair.ts';
import { until } from '../lib/procs.ts';
import { runSipp, users } from '../lib/sipp.ts';

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
