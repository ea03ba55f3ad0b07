/**
 * The link to the SIP server is bounded (sidecar/src/proxy/server-link.ts):
 * past maxBacklogBytes the server has not read, a connection is busy; the
 * edge then drops UDP messages (server-busy, the client sends again) and stops
 * reading a TCP client until the link has drained.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { ServerLink } from '../../sidecar/src/proxy/server-link.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('a server that stops reading the link', () => {
  it('makes the connection busy past the backlog; it drains, and whoever waited is told, once the server reads again', async () => {
    // Every connection of the link (the probe's too) is one the server does not read.
    const servers: net.Socket[] = [];
    let read = 0;
    const srv = net.createServer((s) => {
      servers.push(s);
      s.pause(); // a server behind its clients
      s.on('data', (d) => {
        read += d.length;
      });
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const link = new ServerLink(
      { host: '127.0.0.1', port, connections: 1, maxMessageBytes: 65535, maxBacklogBytes: 1 << 20 },
      createLogger('silent', 'test'),
      createMetrics(),
      () => {},
    );
    try {
      const deadline = Date.now() + 5000;
      while (!link.ready && Date.now() < deadline) await sleep(10);
      assert.equal(link.busy(0), false);
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      // Far more than the kernel's socket buffers and the backlog take.
      for (let i = 0; i < 200 && !link.busy(0); i++) {
        link.sendOn(0, [chunk]);
        await sleep(1); // one write per turn (turn-writer)
      }
      assert.equal(link.busy(0), true, 'busy once the server is a backlog behind');
      let drained = false;
      link.whenDrained(0, () => {
        drained = true;
      });
      await sleep(100);
      assert.equal(drained, false, 'not while the server still reads nothing');
      for (const s of servers) s.resume();
      const until = Date.now() + 5000;
      while (!drained && Date.now() < until) await sleep(10);
      assert.equal(drained, true, 'told once the server has read the backlog');
      assert.equal(link.busy(0), false);
      assert.ok(read > 1 << 20, `the server got it all (${read} bytes)`);
    } finally {
      link.close();
      srv.close();
    }
  });
});
