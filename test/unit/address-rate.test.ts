/**
 * The per-address request rate (proxy/address-rate.ts): a burst, then the
 * rate; datagrams past it refused, connections paused instead; every
 * connection of an address sharing one bucket; the table bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressRate } from '../../sidecar/src/proxy/address-rate.ts';

const limits = { rate: 100, burst: 50, maxAddresses: 4 };

describe('per-address request rate', () => {
  it('admits a burst, then the rate; a refused datagram takes nothing', () => {
    const r = new AddressRate(limits);
    let admitted = 0;
    for (let i = 0; i < 200; i++) if (r.admit('198.18.0.10', 0)) admitted++;
    assert.equal(admitted, 50, 'the burst, at one instant');
    // 100 ms later: 10 more (100 a second), however many were refused meanwhile.
    admitted = 0;
    for (let i = 0; i < 200; i++) if (r.admit('198.18.0.10', 100)) admitted++;
    assert.equal(admitted, 10);
    // Idle for a second: back to a full burst, not more.
    admitted = 0;
    for (let i = 0; i < 200; i++) if (r.admit('198.18.0.10', 1100)) admitted++;
    assert.equal(admitted, 50);
  });

  it('one address’s flood costs another address nothing', () => {
    const r = new AddressRate(limits);
    for (let i = 0; i < 1000; i++) r.admit('198.18.0.66', 0);
    for (let i = 0; i < 50; i++) assert.equal(r.admit('198.18.0.20', 0), true);
  });

  it('a stream is paused, not refused: its connections share the address’s bucket and its debt, up to 30 s of it', () => {
    const r = new AddressRate(limits);
    // Two connections of one address, 25 messages each: the burst is spent together.
    for (let i = 0; i < 25; i++) {
      assert.equal(r.take('198.18.0.10', 0), 0);
      assert.equal(r.take('198.18.0.10', 0), 0);
    }
    // The next one from either is over: pause until a token is back (10 ms at 100/s).
    assert.equal(r.take('198.18.0.10', 0), 10);
    assert.equal(r.take('198.18.0.10', 0), 20);
    // What was taken is owed: 1000 more at once hold the address's connections ~10 s.
    for (let i = 0; i < 1000; i++) r.take('198.18.0.10', 0);
    assert.equal(r.take('198.18.0.10', 0), 10_030);
    // However much more, at most 30 s.
    for (let i = 0; i < 10_000; i++) r.take('198.18.0.10', 0);
    assert.equal(r.take('198.18.0.10', 0), 30_000);
    // Another address is not held by it.
    assert.equal(r.take('198.18.0.20', 0), 0);
  });

  it('tells a connection what its address still owes without taking anything (a resumed or new connection waits for it)', () => {
    const r = new AddressRate(limits);
    assert.equal(r.owedMs('198.18.0.10', 0), 0, 'an address never seen owes nothing');
    for (let i = 0; i < 60; i++) r.take('198.18.0.10', 0); // 10 over the burst
    assert.equal(r.owedMs('198.18.0.10', 0), 100);
    assert.equal(r.owedMs('198.18.0.10', 0), 100, 'asking takes nothing');
    assert.equal(r.owedMs('198.18.0.10', 50), 50);
    assert.equal(r.owedMs('198.18.0.10', 100), 0);
  });

  it('remembers at most maxAddresses; the oldest is forgotten first', () => {
    const r = new AddressRate(limits);
    for (let i = 0; i < 100; i++) r.admit('198.18.0.10', 0); // spent
    for (let i = 1; i <= 4; i++) r.admit(`198.18.1.${i}`, 0);
    assert.equal(r.size, 4);
    // .10 was pushed out: it starts again with a full bucket.
    assert.equal(r.admit('198.18.0.10', 0), true);
    assert.equal(r.size, 4);
  });

  it('rate 0 turns it off', () => {
    assert.equal(new AddressRate({ ...limits, rate: 0 }).enabled, false);
    assert.equal(new AddressRate(limits).enabled, true);
  });
});
