/**
 * Issue 8 item 10: a backup withholds everything its server sends, but it
 * must still note where each relayed INVITE went. After a takeover, tm on the
 * new master builds CANCEL (and ACK for non-2xx) for those INVITEs without
 * X-Sipha-Nh; they must go to the INVITE's real next hop (e.g. a NATed
 * contact's received address), not to the Request-URI. Real UDP on loopback.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { after, describe, it } from 'node:test';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { EdgeProxy } from '../../sidecar/src/proxy/edge-proxy.ts';
import { until } from '../lib/procs.ts';

async function udpSink(): Promise<{ port: number; got: string[]; close: () => void }> {
  const s = dgram.createSocket('udp4');
  const got: string[] = [];
  s.on('message', (b) => got.push(b.toString('latin1')));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return { port: s.address().port, got, close: () => s.close() };
}

const request = (method: string, ruri: string, branch: string, extra = '') =>
  Buffer.from(
    `${method} ${ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=${branch}\r\n${extra}` +
      `From: <sip:alice@example.test>;tag=a1\r\nTo: <sip:bob@example.test>\r\nCall-ID: hops-1\r\n` +
      `CSeq: 1 ${method}\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n\r\n`,
    'latin1',
  );

describe('the backup records where INVITEs went (item 10)', () => {
  const closers: Array<() => void> = [];
  after(() => {
    for (const c of closers) c();
  });

  it('a CANCEL built after a takeover goes to the withheld INVITE next hop, not the Request-URI', async () => {
    const realHop = await udpSink(); // the contact's received address (behind its NAT)
    const ruriHop = await udpSink(); // the registered Contact (unreachable in real life)
    closers.push(realHop.close, ruriHop.close);
    const proxy = new EdgeProxy(
      {
        publicAddress: '127.0.0.1',
        sipPort: 0,
        serverHost: '127.0.0.1',
        serverPort: 9, // no server: the link is not needed here
        egressPort: 0,
        linkConnections: 1,
        maxMessageBytes: 65535,
      },
      createLogger('silent', 'test'),
      createMetrics(),
    );
    closers.push(() => proxy.close());
    await proxy.start();
    const ruri = `sip:bob@127.0.0.1:${ruriHop.port}`;

    // As backup: the server relays the replicated INVITE; the gate withholds it.
    proxy.gate = () => 'role-backup';
    proxy.fromServer(request('INVITE', ruri, 'z9hG4bKhop1', `X-Sipha-Nh: sip:127.0.0.1:${realHop.port}\r\n`));
    // Takeover: now master. tm cancels the INVITE without naming the next hop.
    proxy.gate = () => null;
    proxy.fromServer(request('CANCEL', ruri, 'z9hG4bKhop1'));
    await until(() => realHop.got.length + ruriHop.got.length > 0, 2000, 'the CANCEL left');
    assert.equal(ruriHop.got.length, 0, 'nothing went to the Request-URI');
    assert.match(realHop.got[0] ?? '', /^CANCEL /);
  });
});
