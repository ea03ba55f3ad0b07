import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { describe, it } from 'node:test';
import {
  CounterGrowth,
  growthText,
  parseUdpSnmp,
  parseUdpSockets,
  udpSnmpOf,
  udpSocketDrops,
} from '../../bench/lib/kernel-drops.ts';

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

  // /proc/net/udp: one line per socket, the address little-endian hex, the last column the socket's drops.
  const UDP_SOCKETS = [
    '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            ',
    ' 1021: 640012C6:13C4 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 41 2 0000000000000000 563190     ',
    ' 1022: 0100007F:13C5 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 42 2 0000000000000000 3          ',
    ' 1023: 0100007F:13C6 00000000:0000 07 00000000 00000000 00:00000000 00000000     0        0 43 2 0000000000000000 0          ',
  ].join('\n');

  it("reads each socket's own drops by its local address (which socket overflowed, not only that one did)", () => {
    const drops = parseUdpSockets(UDP_SOCKETS);
    assert.deepEqual(
      [...drops],
      [
        ['198.18.0.100:5060', 563190],
        ['127.0.0.1:5061', 3],
        ['127.0.0.1:5062', 0],
      ],
    );
  });

  it("reads a live socket of this process's namespace", async () => {
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    try {
      const drops = udpSocketDrops(process.pid);
      assert.equal(drops.get(`127.0.0.1:${sock.address().port}`), 0);
    } finally {
      sock.close();
    }
  });
});
