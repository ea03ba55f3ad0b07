import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CounterGrowth, growthText, parseUdpSnmp, udpSnmpOf } from '../../bench/lib/kernel-drops.ts';

const SNMP = [
  'Ip: Forwarding DefaultTTL',
  'Ip: 1 64',
  'Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors',
  'Udp: 120 3 7 99 7 0 0 0 0',
  'UdpLite: InDatagrams NoPorts',
  'UdpLite: 0 0',
].join('\n');

describe('kernel drops: /proc/net/snmp and per-second growth', () => {
  it('reads the Udp: counters by name, not the UdpLite: ones', () => {
    const udp = parseUdpSnmp(SNMP);
    assert.equal(udp.RcvbufErrors, 7);
    assert.equal(udp.InDatagrams, 120);
    assert.equal(udp.NoPorts, 3);
  });

  it('refuses a text without Udp: lines instead of reading zeros', () => {
    assert.throws(() => parseUdpSnmp('Ip: Forwarding\nIp: 1\n'), /no Udp: lines/);
  });

  it("reads this process's own namespace through /proc/PID/net", () => {
    const udp = udpSnmpOf(process.pid);
    assert.equal(typeof udp.RcvbufErrors, 'number');
    assert.ok(Number.isFinite(udp.RcvbufErrors));
  });

  it('counts growth between readings, a reset (a host made again) from 0, a missing reading as none', () => {
    const g = new CounterGrowth();
    g.add(0, 'b', 100); // first reading: a base, no growth
    g.add(1, 'b', 100);
    g.add(2, 'b', 130);
    g.add(3, 'b', null); // the host is down: no reading
    g.add(4, 'b', 5); // a new namespace: counts from 0
    g.add(5, 'a', 9);
    g.add(6, 'a', 10);
    assert.deepEqual(g.grows, [
      { t: 2, source: 'b', n: 30 },
      { t: 4, source: 'b', n: 5 },
      { t: 6, source: 'a', n: 1 },
    ]);
    assert.equal(g.total('b'), 35);
    assert.equal(g.total('callee'), 0);
    assert.equal(growthText(g.between(2, 5)), 'b +35');
    assert.equal(growthText(g.between(3, 7)), 'b +5, a +1');
    assert.equal(growthText(g.between(7, 9)), '');
  });
});
