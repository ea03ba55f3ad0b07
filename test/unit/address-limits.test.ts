/**
 * Per-address limits of the public TCP and TLS listeners (tcp-flows.ts with
 * address-table.ts), with real sockets on loopback: past
 * SIPHA_TCP_MAX_FLOWS_PER_ADDRESS open connections, or past
 * SIPHA_TCP_ACCEPT_RATE_PER_ADDRESS new ones a second, a connection from that
 * address is closed at accept and counted; other addresses are not touched;
 * a TLS connection is refused before its handshake. What they do for other
 * clients under a connection flood is measured by `npm run bench -- attack`.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import tls from 'node:tls';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics, type Metrics } from '../../sidecar/src/metrics.ts';
import { DEFAULT_TCP_LIMITS, TcpFlows, type TcpLimits } from '../../sidecar/src/proxy/tcp-flows.ts';
import { TlsCredentials, type TlsSettings } from '../../sidecar/src/tls/credentials.ts';
import { until } from '../lib/procs.ts';
import { makeTestCa } from '../lib/tls-certs.ts';

const options = (i: number) =>
  `OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-${i}\r\nCall-ID: c${i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`;

const root = `/tmp/sipha-addr-unit-${process.pid}`;
after(() => rmSync(root, { recursive: true, force: true }));

async function drops(metrics: Metrics, reason: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric('sipha_messages_dropped_total')?.get();
  return m?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

async function listener(limits: Partial<TcpLimits>) {
  const metrics = createMetrics();
  const got: string[] = [];
  const flows = new TcpFlows('127.0.0.1', 65535, createLogger('silent', 'test'), metrics, (b) => got.push(b.toString()), {
    ...DEFAULT_TCP_LIMITS,
    ...limits,
  });
  await flows.listen(0);
  const port = ((flows as unknown as { server: net.Server }).server.address() as net.AddressInfo).port;
  return { flows, metrics, got, port };
}

/** A connection from `from`; resolves once it is open, with whether the far end closed it within `waitMs`. */
async function connect(port: number, from = '127.0.0.1', waitMs = 300): Promise<{ socket: net.Socket; closed: boolean }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
  socket.on('error', () => {});
  let closed = false;
  socket.on('close', () => {
    closed = true;
  });
  // In one process the listener's reset can land before the client hears its own connect: either ends the wait.
  await new Promise<void>((r) => {
    socket.once('connect', () => r());
    socket.once('close', () => r());
  });
  await new Promise((r) => setTimeout(r, waitMs));
  return {
    socket,
    get closed() {
      return closed;
    },
  };
}

describe('connections from one address past SIPHA_TCP_MAX_FLOWS_PER_ADDRESS', () => {
  it('are closed at accept and counted; the ones held work; another address still gets in; a slot freed is reused', async () => {
    const { flows, metrics, got, port } = await listener({ maxFlowsPerAddress: 3, acceptRatePerAddress: 0 });
    try {
      const held = [];
      for (let i = 0; i < 3; i++) held.push(await connect(port));
      const over = [await connect(port), await connect(port)];
      assert.deepEqual(
        held.map((c) => c.closed),
        [false, false, false],
      );
      assert.deepEqual(
        over.map((c) => c.closed),
        [true, true],
        'the 4th and 5th are closed by the listener',
      );
      assert.equal(await drops(metrics, 'tcp-address-full'), 2);
      held[0]?.socket.write(options(1));
      await until(() => got.length === 1, 2000, 'a held connection is read');
      const other = await connect(port, '127.0.0.2');
      assert.equal(other.closed, false, 'another address has its own allowance');
      held[1]?.socket.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const again = await connect(port);
      assert.equal(again.closed, false, 'a closed connection gives its slot back');
      for (const c of [...held, ...over, other, again]) c.socket.destroy();
    } finally {
      flows.close();
    }
  });
});

describe('new connections from one address past SIPHA_TCP_ACCEPT_RATE_PER_ADDRESS', () => {
  it('are closed at accept once the burst (the per-address cap) is spent, even when each is closed again at once', async () => {
    const { flows, metrics, port } = await listener({ maxFlowsPerAddress: 5, acceptRatePerAddress: 2 });
    try {
      const seen = [];
      for (let i = 0; i < 8; i++) {
        const c = await connect(port, '127.0.0.1', 50);
        seen.push(c.closed);
        c.socket.destroy();
      }
      // 8 attempts in ~0.5 s: a burst of 5, then 2 a second refill (at most one more token in that time).
      const refused = seen.filter(Boolean).length;
      assert.ok(refused >= 2 && refused <= 3, `refused ${refused} of 8: ${seen}`);
      assert.deepEqual(seen.slice(0, 5), [false, false, false, false, false], 'the burst');
      assert.equal(await drops(metrics, 'tcp-address-rate'), refused);
      const other = await connect(port, '127.0.0.2');
      assert.equal(other.closed, false, 'another address has its own bucket');
      other.socket.destroy();
    } finally {
      flows.close();
    }
  });
});

describe('a TLS connection past the per-address cap', () => {
  it('is refused before its handshake, counted as tcp-address-full (not as a failed handshake)', async () => {
    const ca = makeTestCa(root);
    const cert = ca.issue('edge', ['127.0.0.1']);
    const metrics = createMetrics();
    const settings: TlsSettings = { port: 0, clientAuth: 'none', sni: new Map(), outboundCaFile: null, dir: cert.dir };
    const credentials = new TlsCredentials(settings, createLogger('silent', 'test'));
    const flows = new TcpFlows(
      '127.0.0.1',
      65535,
      createLogger('silent', 'test'),
      metrics,
      () => {},
      { ...DEFAULT_TCP_LIMITS, maxFlowsPerAddress: 1, acceptRatePerAddress: 0 },
      { credentials, settings },
    );
    await flows.listen(0);
    const port = ((flows.tlsServer as tls.Server).address() as net.AddressInfo).port;
    const handshake = () =>
      new Promise<string>((resolve) => {
        const s = tls.connect({ port, host: '127.0.0.1', ca: ca.cert });
        s.once('secureConnect', () => resolve('secured'));
        s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        s.once('close', () => resolve('closed'));
        sockets.push(s);
      });
    const sockets: tls.TLSSocket[] = [];
    try {
      assert.equal(await handshake(), 'secured');
      assert.notEqual(await handshake(), 'secured', 'the second from the same address');
      assert.equal(await drops(metrics, 'tcp-address-full'), 1);
      assert.equal(await drops(metrics, 'tls-handshake-failed'), 0);
      sockets[0]?.destroy();
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await handshake(), 'secured', 'its slot is free again once the first closed');
    } finally {
      for (const s of sockets) s.destroy();
      flows.close();
      credentials.stop();
    }
  });
});

describe('the per-address table', () => {
  it('remembers at most maxAddresses addresses, the least recently seen forgotten first', async () => {
    const { AddressTable } = await import('../../sidecar/src/proxy/address-table.ts');
    const t = new AddressTable({ maxFlowsPerAddress: 2, acceptRatePerAddress: 0, maxAddresses: 3 });
    for (const a of ['a', 'b', 'c']) assert.equal(typeof t.admit(a), 'object');
    assert.equal(typeof t.admit('a'), 'object', 'a touched: now the newest');
    assert.equal(t.admit('a'), 'tcp-address-full');
    t.admit('d'); // evicts b, the least recently seen
    assert.equal(t.size, 3);
    assert.deepEqual(t.addresses(), ['c', 'a', 'd']);
    for (let i = 0; i < 10_000; i++) t.admit(`x${i}`);
    assert.equal(t.size, 3, 'many addresses cannot grow it');
  });
});
