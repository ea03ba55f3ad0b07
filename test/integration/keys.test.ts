/**
 * The pair's key lifecycle on the netns bed (issue 9 item 4, decision 0012),
 * with real Kamailio and sidecar processes: a side that hears its peer with a
 * key it does not hold never elects itself on that silence, and a rotation
 * through the key files (as the kubelet rewrites a mounted Secret) changes
 * the keys of a serving pair with no role change and nothing lost.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import type { NetBed } from '../lib/netbed.ts';
import { type PairNode, pairBed, role, roleStory, twoMasterMs, VIP } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';
import { runSipp, users } from '../lib/sipp.ts';

const target = `${VIP}:5060`;

/** Samples both roles every 20 ms for `ms`; returns the roles b held. */
async function watchRoles(a: PairNode, b: PairNode, ms: number): Promise<{ a: Set<string>; b: Set<string> }> {
  const seen = { a: new Set<string>(), b: new Set<string>() };
  const end = Date.now() + ms;
  while (Date.now() < end) {
    seen.a.add(role(a));
    seen.b.add(role(b));
    await sleep(20);
  }
  return seen;
}

describe('a peer with a key this side does not hold', { timeout: 180_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('a backup restarted with another key never serves (no witness): one master, the mismatch counted on both sides', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b: b0 } = pb;
    await bed.stop(b0.sidecar.child, 'SIGKILL');
    // It holds back, so it never gets ready: wait for it to be alive only.
    const b = await b0.restartSidecar({ SIPHA_REPLICATION_KEY: randomBytes(32).toString('base64'), SIPHA_TEST_LIVE_ONLY: '1' });
    // Well past the start-up grace (1 s) after which a node that heard nobody stands alone.
    const seen = await watchRoles(a, b, 4000);
    assert.deepEqual([...seen.a], ['master'], roleStory(a, b));
    assert.ok(!seen.b.has('master'), `b served: ${[...seen.b]}\n${roleStory(a, b)}`);
    assert.equal(twoMasterMs(a, b), 0);
    assert.ok(b.sidecar.metric('sipha_key_mismatches_total', { path: 'udp' }) >= 1, 'b says why it holds back');
    assert.ok(a.sidecar.metric('sipha_key_mismatches_total', { path: 'udp' }) >= 1, 'a sees it too');
    const opt = await runSipp(bed, pb.client, { scenario: 'options.xml', target, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10, 'the master keeps serving');
  });
});

describe('a key rotation through the key files (as the kubelet rewrites a mounted Secret)', { timeout: 240_000 }, () => {
  let bed: NetBed;
  after(async () => {
    await bed?.destroy();
  });

  it('three steps (add the next key, sign with it, drop the old) change the keys of a serving pair: no role change, nothing lost', async () => {
    const [k1, k2] = [randomBytes(32).toString('base64'), randomBytes(32).toString('base64')];
    let dirs: string[] = [];
    // What the operator writes to the Secret at each step; the kubelet's swap is a rename, ours a rewrite.
    const write = (dir: string, files: Record<string, string | null>) => {
      for (const [name, text] of Object.entries(files)) {
        if (text === null) rmSync(join(dir, name), { force: true });
        else writeFileSync(join(dir, name), text);
      }
    };
    const pb = await pairBed(
      {},
      {
        beforeStart: (bed) => {
          dirs = ['a', 'b'].map((h) => bed.subdir(`keys-${h}`));
          for (const d of dirs) {
            mkdirSync(d, { recursive: true });
            write(d, { 'key-1': k1 });
          }
        },
        envFor: (ordinal) => ({ SIPHA_REPLICATION_KEY: '', SIPHA_KEY_DIR: dirs[ordinal] as string }),
      },
    );
    bed = pb.bed;
    const { a, b } = pb;
    const aors = users('rot', 300);
    const reg = await runSipp(bed, pb.client, { scenario: 'register.xml', target, calls: 300, rate: 300, users: aors });
    assert.equal(reg.successful, 300);
    await until(() => usrlocStat(b.kamailio, 'registered_users') === 300, 10000, 'b holds them');
    const keysOf = (n: PairNode) => {
      const lines = n.sidecar.output().match(/[^\n]*"pair keys changed"[^\n]*/g) ?? [];
      return /"to":"([0-9,]+)"/.exec(lines.at(-1) ?? '')?.[1] ?? '1';
    };
    const step = async (files: Record<string, string | null>, want: string, order: string[]) => {
      for (const h of order) {
        write(dirs[h === 'a' ? 0 : 1] as string, files);
        // One side a few beats ahead of the other: what the kubelets' separate syncs do.
        await sleep(300);
      }
      await until(() => keysOf(a) === want && keysOf(b) === want, 5000, `both hold ${want}`);
    };
    // Both roles sampled every 20 ms through the three steps.
    let stop = false;
    const watch = (async () => {
      const all = { a: new Set<string>(), b: new Set<string>() };
      while (!stop) {
        all.a.add(role(a));
        all.b.add(role(b));
        await sleep(20);
      }
      return all;
    })();
    try {
      // The operator's three merge patches of the Secret (decision 0012).
      await step({ 'key-2': k2, 'sign-id': '1' }, '1,2', ['a', 'b']);
      await step({ 'sign-id': '2' }, '2,1', ['b', 'a']);
      await step({ 'key-1': null }, '2', ['a', 'b']);
      await sleep(500);
    } finally {
      stop = true;
    }
    const seen = await watch;
    assert.deepEqual([...seen.a], ['master'], roleStory(a, b));
    assert.deepEqual([...seen.b], ['backup'], roleStory(a, b));
    assert.equal(a.sidecar.metric('sipha_key_mismatches_total', { path: 'udp' }), 0);
    assert.equal(b.sidecar.metric('sipha_key_mismatches_total', { path: 'udp' }), 0);

    // Only the new key now: a restarted backup gets a new stream and the full state under it...
    await bed.stop(b.sidecar.child, 'SIGKILL');
    const b2 = await b.restartSidecar();
    await until(() => role(b2) === 'backup' && b2.sidecar.metric('sipha_in_sync') === 1, 15000, 'b rejoins in sync under key 2');
    assert.equal(a.sidecar.metric('sipha_key_mismatches_total', { path: 'stream' }), 0);
    // ...and takes over with everything when the master's server dies.
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b2) === 'master', 5000, 'b takes over');
    assert.equal(lookupAll(b2.kamailio, aors).size, 300, 'no registration lost');
  });
});
