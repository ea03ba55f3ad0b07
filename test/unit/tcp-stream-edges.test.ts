/**
 * Two edges of the public TCP flows found in review (issue 9 item 6's timers,
 * RFC 3261 18.2.2): a client that streams steadily, each read ending inside
 * the next message, is not a slowloris; and a response whose client
 * connection has closed goes on a new connection to the Via's address.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { DEFAULT_TCP_LIMITS, TcpFlows } from '../../sidecar/src/proxy/tcp-flows.ts';
import { edgeWithServer } from '../lib/edge-harness.ts';
import { sleep, until } from '../lib/procs.ts';

const options = (i: number, via = 'SIP/2.0/TCP 127.0.0.1:1') =>
  `OPTIONS sip:x SIP/2.0\r\nVia: ${via};branch=z9hG4bK-${i}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c${i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`;

describe('public TCP flows: edges', () => {
  it('keeps a client that streams steadily whose reads end inside the next message (the header deadline is per message)', async () => {
    const got: number[] = [];
    const limits = { ...DEFAULT_TCP_LIMITS, headerTimeoutMs: 400 };
    const flows = new TcpFlows('127.0.0.1', 65535, createLogger('silent', 'test'), createMetrics(), () => got.push(1), limits);
    await flows.listen(0);
    const port = ((flows as unknown as { server: net.Server }).server.address() as net.AddressInfo).port;
    const c = net.connect(port, '127.0.0.1');
    let closed = false;
    c.on('close', () => {
      closed = true;
    });
    await new Promise((r) => c.once('connect', r));
    try {
      // 20 writes 100 ms apart (2 s, five header timeouts): each ends one message and starts the next.
      const messages = Array.from({ length: 21 }, (_, i) => options(i + 10)); // all of one length
      const text = messages.join('');
      const len = (messages[0] as string).length;
      const cut = (i: number) => (i === 0 ? 0 : i * len + 10); // 10 bytes into message i
      for (let i = 0; i < 20 && !closed; i++) {
        c.write(text.slice(cut(i), cut(i + 1)));
        await sleep(100);
      }
      assert.equal(closed, false, 'the connection stayed open');
      assert.ok(got.length >= 18, `messages arrived: ${got.length}`);
    } finally {
      c.destroy();
      flows.close();
    }
  });

  it("sends a response whose client connection has closed on a new connection to the Via's received/rport", async () => {
    const { proxy, server, sipPort, serverSide: linkSide } = await edgeWithServer();
    try {
      const serverSide = await linkSide;
      // Where the client can be reached again (its new listening port; in the Via's rport, as a server writes it).
      let answered = '';
      const back = net.createServer((s) => s.on('data', (d: Buffer) => (answered += d.toString('latin1'))));
      await new Promise<void>((r) => back.listen(0, '127.0.0.1', r));
      const backPort = (back.address() as net.AddressInfo).port;
      const c = net.connect({ port: sipPort, host: '127.0.0.1' });
      await new Promise((r) => c.once('connect', r));
      c.write(options(7, 'SIP/2.0/TCP 127.0.0.1:1;rport'));
      let linked = '';
      serverSide.on('data', (d: Buffer) => {
        linked += d.toString('latin1');
      });
      await until(() => linked.includes('Call-ID: c7'), 3000, 'the request reached the server');
      c.destroy();
      await sleep(50);
      const via = `Via: SIP/2.0/TCP 127.0.0.1:1;rport=${backPort};received=127.0.0.1;branch=z9hG4bK-7`;
      serverSide.write(
        `SIP/2.0 200 OK\r\n${via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:x>;tag=2\r\nCall-ID: c7\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`,
      );
      await until(() => answered.includes('SIP/2.0 200 OK'), 3000, 'the response arrives on a new connection');
      back.close();
    } finally {
      proxy.close();
      server.close();
    }
  });

  it('never lets the link headers out: a reply the server relays still carrying X-Sipha-Src and X-Sipha-Token leaves without them (the soak found the token at a client)', async () => {
    const dgram = await import('node:dgram');
    const client = dgram.createSocket('udp4');
    const got: string[] = [];
    client.on('message', (b) => got.push(b.toString('latin1')));
    await new Promise<void>((r) => client.bind(0, '127.0.0.1', r));
    const clientPort = client.address().port;
    const { proxy, server } = await edgeWithServer('secret-link-token');
    try {
      // As Kamailio relays a far end's 200 upstream: the stamp the sidecar put on it is still there.
      proxy.fromServer(
        Buffer.from(
          'SIP/2.0 200 OK\r\nX-Sipha-Src: udp:198.18.0.20:5060\r\nX-Sipha-Token: secret-link-token\r\n' +
            `Via: SIP/2.0/UDP 127.0.0.1:${clientPort};received=127.0.0.1;rport=${clientPort};branch=z9hG4bK-1\r\n` +
            'From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: leak\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n',
          'latin1',
        ),
      );
      await until(() => got.length === 1, 2000, 'the reply reaches the client');
      assert.doesNotMatch(got[0] as string, /X-Sipha/i, got[0]);
      assert.match(got[0] as string, /^SIP\/2\.0 200 OK\r\nVia: /);
    } finally {
      proxy.close();
      server.close();
      client.close();
    }
  });
});
