/**
 * The takeover's tickle ACKs (vip/tcp-tickle.ts) and the flows a backup
 * remembers for them (ha/client-flows.ts). That a client's kernel takes the
 * segment and the connection is reset is shown with a real phone in
 * test/integration/softphone.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { TcpClientFlows, tcpSource } from '../../sidecar/src/ha/client-flows.ts';
import { createLogger } from '../../sidecar/src/log.ts';
import { SENDER, tickleFlows, tickleSegment } from '../../sidecar/src/vip/tcp-tickle.ts';

/** RFC 1071, written out again here: the 16-bit one's complement sum of pseudo-header and segment. */
function onesSum(src: string, dst: string, seg: Buffer): number {
  const words: number[] = [];
  for (const ip of [src, dst]) {
    const [a, b, c, d] = ip.split('.').map(Number) as [number, number, number, number];
    words.push((a << 8) | b, (c << 8) | d);
  }
  words.push(6, seg.length);
  for (let i = 0; i < seg.length; i += 2) words.push(((seg[i] as number) << 8) | (seg[i + 1] as number));
  let sum = words.reduce((s, w) => s + w, 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

describe('tickle segments', () => {
  it('are a bare ACK from the VIP port with sequence numbers 0 and a checksum the receiver accepts', () => {
    for (const [src, dst, sport, dport] of [
      ['198.18.0.100', '198.18.0.10', 5060, 40312],
      ['10.0.0.1', '255.255.255.254', 65535, 1],
      ['0.0.0.0', '198.19.255.255', 5061, 65535],
    ] as const) {
      const seg = tickleSegment(src, sport, dst, dport);
      assert.equal(seg.length, 20);
      assert.equal(seg.readUInt16BE(0), sport);
      assert.equal(seg.readUInt16BE(2), dport);
      assert.equal(seg.readUInt32BE(4), 0, 'seq');
      assert.equal(seg.readUInt32BE(8), 0, 'ack');
      assert.equal(seg[12], 0x50, 'five words of header');
      assert.equal(seg[13], 0x10, 'ACK only');
      assert.equal(onesSum(src, dst, seg), 0xffff, `checksum of ${src}:${sport} -> ${dst}:${dport}`);
    }
  });

  it('refuse an address that is not IPv4', () => {
    assert.throws(() => tickleSegment('fe80::1', 5060, '198.18.0.10', 1), /not an IPv4 address/);
    assert.throws(() => tickleSegment('198.18.0.100', 5060, '127.1', 1), /not an IPv4 address/);
  });

  it('are what the Perl sender builds: two rounds, sequence 0 then 2^31 (checked against tickleSegment)', () => {
    const flows = [
      ['198.18.0.10', 40312],
      ['10.1.2.3', 1],
      ['198.19.255.254', 65535],
    ] as const;
    const out = execFileSync('perl', ['-e', SENDER, '198.18.0.100', '5060', '2', '0'], {
      input: flows.map(([a, p]) => `${a} ${p}\n`).join(''),
      env: { ...process.env, SIPHA_TICKLE_DRY: '1' },
      encoding: 'utf8',
    });
    const want = [0, 2 ** 31].flatMap((seq) =>
      flows.map(([a, p]) => tickleSegment('198.18.0.100', 5060, a, p, seq).toString('hex')),
    );
    assert.deepEqual(out.trim().split('\n'), want);
  });

  it('are never built for a flow that is not an IPv4 address and port: nothing is sent, nothing throws', async () => {
    const r = await tickleFlows(
      '198.18.0.100',
      5060,
      [
        { address: '127.0.1', port: 5060 },
        { address: '198.18.0.10', port: 0 },
      ],
      createLogger('silent', 'test'),
    );
    assert.deepEqual(r, { sent: 0, failed: 0 });
  });
});

const link = (first: string) => Buffer.from(`BYE sip:a@198.18.0.100 SIP/2.0\r\n${first}\r\nVia: SIP/2.0/TCP x\r\n\r\n`, 'latin1');

describe("the master's TCP client flows, as a backup learns them", () => {
  it('are read from the X-Sipha-Src the sidecar put first, for TCP only', () => {
    assert.deepEqual(tcpSource(link('X-Sipha-Src: tcp:198.18.0.10:40312')), { address: '198.18.0.10', port: 40312 });
    assert.deepEqual(tcpSource(link('X-Sipha-Src: tcp:198.18.0.10:5060;replay')), { address: '198.18.0.10', port: 5060 });
    assert.equal(tcpSource(link('X-Sipha-Src: udp:198.18.0.10:5060')), null);
    // Not the first header: a client's own X-Sipha-Src is removed at the edge, but never trusted here either.
    assert.equal(tcpSource(Buffer.from('BYE sip:a SIP/2.0\r\nVia: x\r\nX-Sipha-Src: tcp:1.2.3.4:5\r\n\r\n')), null);
    for (const short of ['', 'OPTIONS', 'BYE x SIP/2.0\r\n', 'BYE x SIP/2.0\r\nX-Sipha-Src: tc'])
      assert.equal(tcpSource(Buffer.from(short)), null, JSON.stringify(short));
    for (const bad of [
      'tcp:127.0.1:5060',
      'tcp:203.0.28933:5060',
      'tcp:198.18.0.10:0',
      'tcp:198.18.0.10:70000',
      'tcp:host.example:5060',
      'tcp:1.2:5060',
    ])
      assert.equal(tcpSource(link(`X-Sipha-Src: ${bad}`)), null, bad);
  });

  it('are read for TLS clients too, marked so (they are tickled from the TLS port)', () => {
    assert.deepEqual(tcpSource(link('X-Sipha-Src: tls:198.18.0.10:40312')), { address: '198.18.0.10', port: 40312, tls: true });
    assert.equal(tcpSource(link('X-Sipha-Src: tlx:198.18.0.10:40312')), null);
    assert.equal(tcpSource(link('X-Sipha-Src: tls:198.18.0.10:99999')), null);
  });

  it('are bounded, the least recently heard dropped first, and given once, without those idle past the limit', () => {
    const flows = new TcpClientFlows(3, 500); // idle limit 500 ms: flows are kept for twice that
    flows.heardFrom({ address: '198.18.0.1', port: 1 }, 0);
    flows.heardFrom({ address: '198.18.0.2', port: 2 }, 10);
    flows.heardFrom({ address: '198.18.0.3', port: 3 }, 20);
    flows.heardFrom({ address: '198.18.0.1', port: 1 }, 900); // heard again: now the newest
    flows.heardFrom({ address: '198.18.0.4', port: 4 }, 950); // the fourth: .2 goes
    assert.equal(flows.size, 3);
    const taken = flows.take(1015); // .3 last heard at 20: 995 ms ago, within twice the limit; .2 gone
    assert.deepEqual(
      taken.map((f) => f.port),
      [3, 1, 4],
    );
    assert.deepEqual(flows.take(1015), [], 'given once');
    flows.heardFrom({ address: '198.18.0.5', port: 5 }, 0);
    assert.deepEqual(flows.take(1000), [], 'closed by the idle limit on the master');
  });
});
