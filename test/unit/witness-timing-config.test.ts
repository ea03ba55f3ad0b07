/**
 * The witness timings the sidecar accepts (sidecar/src/config.ts): the master's
 * head start (its claim when the peer is quiet) must come at least an interval
 * before its confirm deadline, whatever the heartbeat settings; else it would
 * stand down on any short silence without having asked the witness.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig, quietIntervals } from '../../sidecar/src/config.ts';

const env = (more: Record<string, string>) => ({
  SIPHA_PEER_ADDRESS: '198.18.0.2',
  SIPHA_NODE_ADDRESS: '198.18.0.1',
  SIPHA_REPLICATION_KEY: Buffer.alloc(32, 7).toString('base64'),
  SIPHA_VIP: '198.18.0.100',
  SIPHA_WITNESS: 'udp:198.18.0.30:5064',
  ...more,
});

describe('witness timings', () => {
  it('the default confirm deadline leaves the claim at least an interval from 4 misses up', () => {
    for (const misses of [4, 5, 8, 20])
      for (const interval of [10, 20, 100]) {
        const c = loadConfig(env({ SIPHA_HEARTBEAT_MISSES: String(misses), SIPHA_HEARTBEAT_INTERVAL_MS: String(interval) }));
        const confirm = c.ha?.witness?.confirmMs as number;
        assert.ok(confirm - quietIntervals(misses) * interval >= interval, `${misses} x ${interval}: ${confirm}`);
        assert.ok(confirm <= (misses - 1) * interval, 'and the deadline before the peer may claim');
      }
  });

  it('refuses 2 or 3 misses with a witness, and a confirm deadline that leaves the claim no time', () => {
    for (const misses of ['2', '3'])
      assert.throws(() => loadConfig(env({ SIPHA_HEARTBEAT_MISSES: misses })), /use 4 misses or more/);
    assert.throws(() => loadConfig(env({ SIPHA_WITNESS_CONFIRM_MS: '45' })), /between its claim/);
    assert.ok(loadConfig(env({ SIPHA_HEARTBEAT_MISSES: '3', SIPHA_WITNESS: '' })).ha, 'without a witness 3 misses are fine');
  });

  it('a Lease witness gets no head start (a claim is an API server round trip): the master claims at peer loss, 500 ms to confirm', () => {
    const w = loadConfig(env({ SIPHA_WITNESS: 'lease', SIPHA_HEARTBEAT_MISSES: '3' })).ha?.witness;
    assert.deepEqual([w?.headStart, w?.confirmMs], [false, 500]);
    assert.equal(loadConfig(env({})).ha?.witness?.headStart, true, 'the UDP arbiter answers in ms: head start');
  });
});
