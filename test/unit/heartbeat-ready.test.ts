/**
 * The heartbeat worker may bind its socket before the main thread asks
 * whether it is ready (found in a pod: the sidecar's start hung for good
 * before its HTTP port opened, and the kubelet restarted it in a loop).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Heartbeats } from '../../sidecar/src/ha/heartbeat.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('heartbeat worker start', () => {
  it('ready() resolves even when the worker was ready long before it was asked', async () => {
    const hb = new Heartbeats({
      key: randomBytes(32),
      ordinal: 0,
      bindAddress: '127.0.0.1',
      port: 0,
      peerAddress: '127.0.0.1',
      peerPort: 9,
      intervalMs: 1000,
      misses: 5,
      quietMs: 40,
      mainHungMs: 5000,
    });
    try {
      await sleep(1500); // the worker has bound its socket by now
      const outcome = await Promise.race([hb.ready().then(() => 'ready'), sleep(3000).then(() => 'hung')]);
      assert.equal(outcome, 'ready');
    } finally {
      await hb.stop();
    }
  });
});

describe('heartbeat worker messages before anyone listens', () => {
  it("what the worker heard before the handler was set is delivered (the peer's view is told only when it changes)", async () => {
    const key = randomBytes(32);
    const cfg = (ordinal: 0 | 1, port: number, peerPort: number) => ({
      key,
      ordinal,
      bindAddress: '127.0.0.1',
      port,
      peerAddress: '127.0.0.1',
      peerPort,
      intervalMs: 20,
      misses: 5,
      quietMs: 40,
      mainHungMs: 5000,
    });
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(cfg(0, base, base + 1));
    const b = new Heartbeats(cfg(1, base + 1, base));
    try {
      await Promise.all([a.ready(), b.ready()]);
      // In a pod, main.ts awaits the Kubernetes client and the recorded terms before
      // HaNode.start() sets the handler: the peer has been heard by then.
      await sleep(1000);
      const heard = await Promise.race([
        new Promise<string>((resolve) => {
          a.onMessage = (m) => {
            if (m.type === 'peer') resolve('peer');
          };
        }),
        sleep(2000).then(() => 'nothing'),
      ]);
      assert.equal(heard, 'peer');
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
