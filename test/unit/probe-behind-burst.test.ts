/**
 * The hung-server probe must not mistake a busy server for a hung one. The
 * soak (session 11) caught it: a backup's Kamailio, restarted and fed the
 * master's state burst (10,000 REGISTERs) on the link, answered the probe's
 * OPTIONS only after the burst ahead of it in the same TCP stream, more than
 * 3 s later. The backup resigned "server-dead", rejoined, took the burst
 * again, and so on (8 times); a master under load did the same and handed
 * the pair over for nothing. The probe now has a link connection of its own,
 * which no burst fills.
 *
 * The server here works like Kamailio's TCP workers: one worker per
 * connection, each answering its connection's messages in order, one a
 * millisecond. The link's two traffic connections get 3 s of work each.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { ServerProbe } from '../../sidecar/src/ha/server-probe.ts';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { ServerLink } from '../../sidecar/src/proxy/server-link.ts';
import { SipMessage } from '../../sidecar/src/sip/message.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A server whose connections are each worked through by a worker of their own, a message a millisecond. */
async function slowServer() {
  /** hung: every worker stops; stuck: the worker of a connection that got a message with this Call-ID stops. */
  const state = { hung: false, stuck: 'Call-ID: stuck' };
  const sockets: net.Socket[] = [];
  const workers: NodeJS.Timeout[] = [];
  const srv = net.createServer((s) => {
    sockets.push(s);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
    });
    s.on('error', () => {});
    workers.push(
      setInterval(() => {
        if (state.hung || buf.includes(state.stuck)) return;
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const msg = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const via = /^Via: .*$/m.exec(msg)?.[0] ?? '';
        const callId = /^Call-ID: .*$/m.exec(msg)?.[0] ?? '';
        const cseq = /^CSeq: .*$/m.exec(msg)?.[0] ?? '';
        s.write(
          `SIP/2.0 200 OK\r\n${via}\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>;tag=2\r\n${callId}\r\n${cseq}\r\nContent-Length: 0\r\n\r\n`,
        );
      }, 1),
    );
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    state,
    close: () => {
      for (const w of workers) clearInterval(w);
      for (const s of sockets) s.destroy();
      srv.close();
    },
  };
}

const register = (i: number) =>
  Buffer.from(
    `REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-r${i}\r\nFrom: <sip:u${i}@127.0.0.1>;tag=${i}\r\n` +
      `To: <sip:u${i}@127.0.0.1>\r\nCall-ID: burst-${i}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n`,
    'latin1',
  );

async function probedLink() {
  const server = await slowServer();
  const health: boolean[] = [];
  let probe: ServerProbe | null = null;
  const link = new ServerLink(
    { host: '127.0.0.1', port: server.port, connections: 2, maxMessageBytes: 65535 },
    createLogger('silent', 'test'),
    createMetrics(),
    (bytes) => {
      const m = parseMessage(bytes);
      if (m instanceof SipMessage) probe?.consume(m);
    },
  );
  probe = new ServerProbe(link, 50, 3, (h) => health.push(h));
  const until = async (f: () => boolean) => {
    for (let i = 0; i < 200 && !f(); i++) await sleep(10);
  };
  await until(() => link.ready);
  assert.ok(link.ready, 'the link is up');
  return {
    server,
    link,
    probe,
    health,
    close: () => {
      probe?.stop();
      link.close();
      server.close();
    },
  };
}

describe('the hung-server probe behind a burst', () => {
  it('a server working through 3 s of burst on the link is not called hung', async () => {
    const t = await probedLink();
    try {
      // The state burst: 3,000 messages on each traffic connection (3 s of work each).
      for (let i = 0; i < 6000; i++) t.link.sendOn(i % 2, [register(i)]);
      t.probe.start();
      await sleep(1000);
      assert.deepEqual(t.health, [], 'no verdict: the server answered its probes while busy');
    } finally {
      t.close();
    }
  });

  it('a server with one stuck worker (one traffic connection never answered) is called hung', async () => {
    // A worker blocked on one connection (a lock, a slow lookup) leaves that connection's calls
    // unanswered while the probe's own connection, served by another worker, answers.
    const t = await probedLink();
    try {
      t.probe.start();
      await sleep(200);
      assert.deepEqual(t.health, [], 'healthy while it answers');
      t.link.sendOn(
        1,
        [register(0).toString('latin1').replace('Call-ID: burst-0', 'Call-ID: stuck')].map((x) => Buffer.from(x, 'latin1')),
      );
      await sleep(400);
      assert.deepEqual(t.health, [false], 'hung: its traffic connection 1 answers nothing');
    } finally {
      t.close();
    }
  });

  it('a server that stops working is still called hung, and healthy once it answers again', async () => {
    const t = await probedLink();
    try {
      t.probe.start();
      await sleep(200);
      assert.deepEqual(t.health, [], 'healthy while it answers');
      t.server.state.hung = true;
      await sleep(400);
      assert.deepEqual(t.health, [false], 'hung: 3 probes unanswered');
      t.server.state.hung = false;
      await sleep(200);
      assert.deepEqual(t.health, [false, true], 'answers again');
    } finally {
      t.close();
    }
  });
});
