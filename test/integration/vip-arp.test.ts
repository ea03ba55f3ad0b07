/**
 * The arp-mode announcer (sidecar/src/vip/arp.ts) on a real interface: a bed
 * host adds the VIP, announces it, renews it and removes it, while a second
 * host on the bridge watches the gratuitous ARP. The takeover must not fork
 * the sidecar: a fork copies the page tables of a Node process of 200-300 MB
 * (several ms of its main thread) and the child spends as long again tearing
 * them down, in the very window where a new master's first messages wait
 * (session 18, perf on the test cluster: ~25 ms of CPU per takeover).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NetBed } from '../lib/netbed.ts';
import { sleep, watchOutput } from '../lib/procs.ts';

const RUN = fileURLToPath(new URL('./fixtures/arp-announcer-run.ts', import.meta.url));
const VIP = '198.18.0.100';

describe('arp-mode VIP announcer', { timeout: 60_000 }, () => {
  let bed: NetBed | undefined;
  before(() => {
    bed = NetBed.create([
      { name: 'a', octet: 11 },
      { name: 'watch', octet: 50 },
    ]);
  });
  after(async () => {
    await bed?.destroy();
  });

  it('takes over, announces, renews and releases without forking the sidecar', async () => {
    const b = bed as NetBed;
    const dump = b.host('watch').spawn('tcpdump', ['-i', 'eth0', '-n', '-l', 'arp']);
    const seen = watchOutput(dump);
    await seen.waitFor(/listening on/, 10_000);
    const out = JSON.parse(b.host('a').run(process.execPath, [RUN, VIP, 'eth0']).trim()) as {
      atStart: string[];
      whileServing: string[];
      atRelease: string[];
      afterAcquire: boolean;
      afterRelease: boolean;
      arpingsAtRelease: number;
    };
    await sleep(1200); // a late announcement from the released node would show here
    await b.stop(dump, 'SIGINT');

    assert.equal(out.afterAcquire, true, 'the VIP is on the interface once acquire() returns');
    assert.equal(out.afterRelease, false, 'the VIP is gone once release() returns');
    assert.deepEqual(out.whileServing, [], 'no process started from the sidecar at the takeover or while serving');
    assert.deepEqual(out.atRelease, [], 'no process started from the sidecar at the release');
    // The last announcement's arping sends at once, then waits a second for replies: the
    // removal must not queue behind it (two nodes would hold the VIP meanwhile).
    assert.ok(out.arpingsAtRelease > 0, "release() returned while the last announcement's arping still ran");
    assert.ok(out.atStart.length > 0, 'the helpers are started at reset(), while nothing is at stake');
    // At once, then again after 50 and 500 ms (a lost first one must not leave clients on the
    // old MAC); nothing from the node once it released the VIP.
    const garps = seen
      .text()
      .split('\n')
      .filter((l) => l.includes(`who-has ${VIP}`) && l.includes(`tell ${VIP}`));
    assert.equal(garps.length, 3, `gratuitous ARPs seen:\n${seen.text()}`);
  });

  it('replaces a helper that died while serving, and the VIP is renewed through the new one', () => {
    const out = JSON.parse((bed as NetBed).host('a').run(process.execPath, [RUN, VIP, 'eth0', 'kill-helper']).trim()) as {
      whileServing: string[];
      heldAfterHelperDied: boolean;
      afterRelease: boolean;
    };
    // The address lives 1 s without a renewal: 1.5 s after the helper died it is there only
    // because the next renewal started another helper (the one fork, where nothing else helps).
    assert.equal(out.heldAfterHelperDied, true, 'the VIP is still held 1.5 s after its helper died');
    assert.deepEqual(out.whileServing, ['spawn sh'], 'one new helper, started by the next step');
    assert.equal(out.afterRelease, false, 'the release goes through the new helper');
  });
});
