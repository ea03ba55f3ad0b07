import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LagWindow } from '../../sidecar/src/ha/replication.ts';

describe('replication lag window', () => {
  it('is NaN before any ack', () => {
    assert.ok(Number.isNaN(new LagWindow(16).percentile(50)));
  });

  it('gives send->ack percentiles and reports every acked message once', () => {
    let t = 0;
    const seen: number[] = [];
    const w = new LagWindow(1024, () => t);
    w.onLag = (ms) => seen.push(ms);
    // Message s is sent at t = s and acked at t = 2s: its lag is s ms (1..100).
    for (let s = 1; s <= 100; s++) {
      t = s;
      w.sent(s);
    }
    for (let s = 1; s <= 100; s++) {
      t = 2 * s;
      w.acked(s, s);
    }
    assert.equal(seen.length, 100);
    assert.equal(w.percentile(50), 50);
    assert.equal(w.percentile(99), 99);
    assert.equal(w.percentile(100), 100);
  });

  it('one ack can cover many messages, and the window keeps only the newest', () => {
    let t = 0;
    const w = new LagWindow(8, () => t);
    for (let s = 1; s <= 20; s++) w.sent(s); // all sent at t = 0
    t = 5;
    w.acked(1, 20); // one cumulative ack
    assert.equal(w.percentile(50), 5);
    t = 7;
    for (let s = 21; s <= 28; s++) w.sent(s);
    t = 8;
    w.acked(21, 28); // lags of 1 ms push the older ones out of the 8 slots
    assert.equal(w.percentile(100), 1);
  });
});
