/**
 * The TLS listener with real OpenSSL on loopback: certificates renewed in
 * place are served without a restart, client certificates are checked as
 * SIPHA_TLS_CLIENT_AUTH says, a client that never finishes its handshake is
 * cut off, and a next hop whose certificate does not verify gets nothing.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import tls from 'node:tls';
import type { TlsClientAuth } from '../../contract/tls-settings.ts';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { EdgeProxy } from '../../sidecar/src/proxy/edge-proxy.ts';
import { DEFAULT_TCP_LIMITS, type Flow, TcpFlows } from '../../sidecar/src/proxy/tcp-flows.ts';
import { TlsCredentials, type TlsSettings } from '../../sidecar/src/tls/credentials.ts';
import { freeFixedPort } from '../lib/free-port.ts';
import { sleep, until } from '../lib/procs.ts';
import { makeTestCa } from '../lib/tls-certs.ts';

const root = `/tmp/sipha-tls-unit-${process.pid}`;
const ca = makeTestCa(root);
const first = ca.issue('first', ['127.0.0.1']);
const second = ca.issue('second', ['127.0.0.1']);
const named = ca.issue('named', ['sip.example.test']);
const client = ca.issue('client', ['trunk.example.test'], { client: true });
const stranger = makeTestCa(join(root, 'stranger'), 'another CA').issue('client', ['x.example.test'], { client: true });

/** A Secret-like directory whose files the test swaps, as the kubelet does. */
function secretDir(name: string, from: string): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const f of ['tls.crt', 'tls.key', 'ca.crt']) copyFileSync(join(from, f), join(dir, f));
  return dir;
}

const open: Array<{ close(): void }> = [];
after(() => {
  for (const o of open) o.close();
  rmSync(root, { recursive: true, force: true });
});

async function listener(settings: Partial<TlsSettings> & { dir: string }, limits = DEFAULT_TCP_LIMITS) {
  const metrics = createMetrics();
  const full: TlsSettings = { port: 0, clientAuth: 'none', sni: new Map(), outboundCaFile: null, ...settings };
  const credentials = new TlsCredentials(full, createLogger('silent', 'test'));
  const reloads: string[] = [];
  credentials.onReload = (r) => reloads.push(r);
  const got: string[] = [];
  const flows = new TcpFlows('127.0.0.1', 65535, createLogger('silent', 'test'), metrics, (b) => got.push(b.toString()), limits, {
    credentials,
    settings: full,
  });
  await flows.listen(0);
  open.push(flows);
  const server = flows.tlsServer as tls.Server;
  return { flows, credentials, metrics, got, reloads, server, port: (server.address() as AddressInfo).port };
}

/** The leaf certificate the server shows, and whether the handshake worked. */
function handshake(
  port: number,
  opts: tls.ConnectionOptions = {},
): Promise<{ ok: boolean; serial?: string; socket?: tls.TLSSocket; err?: string }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ca: ca.cert, ...opts }, () => {
      resolve({ ok: true, serial: s.getPeerCertificate().serialNumber, socket: s });
    });
    s.on('error', (err) => resolve({ ok: false, err: err.message }));
    s.on('close', () => resolve({ ok: false, err: 'closed' }));
  });
}

const OPTIONS = 'OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n';

describe('SIP over TLS: the listener', { timeout: 30_000 }, () => {
  it('serves a certificate renewed in place from the next handshake on, without a restart', async () => {
    const dir = secretDir('renewed', first.dir);
    const l = await listener({ dir });
    l.credentials.start(() => l.flows.tlsServer, 50);
    open.push({ close: () => l.credentials.stop() });
    const before = await handshake(l.port);
    assert.ok(before.ok, before.err);
    before.socket?.write(OPTIONS);
    await until(() => l.got.length === 1, 2000, 'the message arrives over TLS');
    for (const f of ['tls.crt', 'tls.key']) copyFileSync(join(second.dir, f), join(dir, f));
    await until(
      async () => (await handshake(l.port)).serial !== before.serial,
      3000,
      'new handshakes get the renewed certificate',
    );
    assert.deepEqual(l.reloads, ['changed']);
    // The connection made before the renewal goes on.
    before.socket?.write(OPTIONS);
    await until(() => l.got.length === 2, 2000, 'the older connection still carries messages');
    before.socket?.destroy();
  });

  it('keeps serving when the renewed files are broken (a key that does not match), and says so once', async () => {
    const dir = secretDir('broken', first.dir);
    const l = await listener({ dir });
    copyFileSync(join(second.dir, 'tls.key'), join(dir, 'tls.key')); // the first certificate with the second's key
    l.credentials.check(l.flows.tlsServer);
    const after = await handshake(l.port);
    assert.ok(after.ok, after.err);
    l.credentials.check(l.flows.tlsServer); // said once, not on every re-read
    assert.deepEqual(l.reloads, ['failed']);
  });

  it('reads the outbound CA at start (a missing file is a clear error, not a crash at the first TLS request) and keeps it when it goes', () => {
    const log = createLogger('silent', 'test');
    const missing = join(root, 'no-such-ca.crt');
    assert.throws(
      () => new TlsCredentials({ dir: first.dir, port: 0, clientAuth: 'none', sni: new Map(), outboundCaFile: missing }, log),
      /TLS outbound CA .*no-such-ca\.crt: ENOENT/,
    );
    const file = join(root, 'outbound-ca.crt');
    copyFileSync(ca.certFile, file);
    const c = new TlsCredentials({ dir: first.dir, port: 0, clientAuth: 'none', sni: new Map(), outboundCaFile: file }, log);
    const reloads: string[] = [];
    c.onReload = (r) => reloads.push(r);
    rmSync(file);
    c.check(null);
    assert.deepEqual(reloads, ['failed']);
    assert.ok(c.clientOptions('127.0.0.1').ca, 'the CA in use stays');
  });

  it('picks the certificate by SNI', async () => {
    const l = await listener({ dir: first.dir, sni: new Map([['sip.example.test', named.dir]]) });
    const byName = await handshake(l.port, { servername: 'sip.example.test', checkServerIdentity: () => undefined });
    const plain = await handshake(l.port);
    assert.ok(byName.ok && plain.ok);
    assert.notEqual(byName.serial, plain.serial);
    byName.socket?.destroy();
    plain.socket?.destroy();
  });

  for (const [mode, none, signed, foreign] of [
    ['require', false, true, false],
    ['optional', true, true, false],
    ['none', true, true, true],
  ] as Array<[TlsClientAuth, boolean, boolean, boolean]>) {
    it(`client certificates, ${mode}: without one ${none ? 'in' : 'out'}, CA-signed in, another CA's ${foreign ? 'in' : 'out'}`, async () => {
      const l = await listener({ dir: first.dir, clientAuth: mode });
      const carry = async (opts: tls.ConnectionOptions) => {
        const h = await handshake(l.port, opts);
        if (!h.ok) return false;
        const before = l.got.length;
        h.socket?.write(OPTIONS);
        const arrived = await until(() => l.got.length > before, 1000, 'arrives').then(
          () => true,
          () => false,
        );
        h.socket?.destroy();
        return arrived;
      };
      assert.equal(await carry({}), none, 'no client certificate');
      assert.equal(await carry({ cert: client.cert, key: client.key }), signed, 'a certificate the CA signed');
      assert.equal(await carry({ cert: stranger.cert, key: stranger.key }), foreign, "another CA's certificate");
    });
  }

  it("checks client certificates against the main directory's CA whatever certificate SNI picks (review finding)", async () => {
    // The SNI Secret carries its own issuer's ca.crt (another CA), or none at all.
    const sniDir = join(root, 'sni-other-ca');
    mkdirSync(sniDir, { recursive: true });
    for (const f of ['tls.crt', 'tls.key']) copyFileSync(join(named.dir, f), join(sniDir, f));
    copyFileSync(join(root, 'stranger', 'ca.crt'), join(sniDir, 'ca.crt'));
    const noCa = join(root, 'sni-no-ca');
    mkdirSync(noCa, { recursive: true });
    for (const f of ['tls.crt', 'tls.key']) copyFileSync(join(named.dir, f), join(noCa, f));
    const l = await listener({
      dir: first.dir,
      clientAuth: 'require',
      sni: new Map([
        ['sip.example.test', sniDir],
        ['other.example.test', noCa],
      ]),
    });
    for (const servername of ['sip.example.test', 'other.example.test']) {
      const via = { servername, checkServerIdentity: () => undefined };
      const ours = await handshake(l.port, { ...via, cert: client.cert, key: client.key });
      const before = l.got.length;
      ours.socket?.write(OPTIONS);
      await until(() => l.got.length > before, 2000, `a client our CA signed is let in through ${servername}`);
      ours.socket?.destroy();
      const foreign = await handshake(l.port, { ...via, cert: stranger.cert, key: stranger.key });
      const carried = foreign.ok
        ? await new Promise<boolean>((resolve) => {
            const n = l.got.length;
            foreign.socket?.write(OPTIONS);
            setTimeout(() => resolve(l.got.length > n), 500);
          })
        : false;
      foreign.socket?.destroy();
      assert.equal(carried, false, `another CA's client is refused through ${servername}`);
    }
  });

  it('does not adopt a handshake that ends after the listener closed (a demoted node serves nobody; review finding)', async () => {
    const l = await listener({ dir: first.dir });
    const raw = net.connect(l.port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    await sleep(50); // accepted by the server, handshake not begun
    l.flows.close();
    const s = tls.connect({ socket: raw, ca: ca.cert, servername: undefined, checkServerIdentity: () => undefined });
    await new Promise<void>((resolve) => {
      s.once('secureConnect', () => {
        s.write(OPTIONS);
        resolve();
      });
      s.once('error', () => resolve());
      s.once('close', () => resolve());
    });
    await sleep(300);
    assert.equal(l.got.length, 0, 'nothing handed on after the listener closed');
    s.destroy();
  });

  it('cuts off a client that opens a connection and never finishes its handshake', async () => {
    const l = await listener({ dir: first.dir }, { ...DEFAULT_TCP_LIMITS, headerTimeoutMs: 200 });
    const s = net.connect(l.port, '127.0.0.1');
    const t0 = Date.now();
    const closedAfter = await new Promise<number>((resolve) => s.on('close', () => resolve(Date.now() - t0)));
    assert.ok(closedAfter < 2000, `closed after ${closedAfter} ms (the limit is 200 ms)`);
    const text = await l.metrics.registry.getSingleMetricAsString('sipha_messages_dropped_total');
    assert.match(text, /tls-handshake-failed/);
  });

  it('sends nothing to a next hop whose certificate does not verify (RFC 5922), and counts it', async () => {
    // A TLS server with the stranger CA's certificate: not one our CA bundle trusts.
    let received = 0;
    const hop = tls.createServer({ cert: stranger.cert, key: stranger.key }, (s) => s.on('data', () => received++));
    await new Promise<void>((r) => hop.listen(0, '127.0.0.1', r));
    open.push(hop);
    const l = await listener({ dir: first.dir, outboundCaFile: ca.certFile });
    const flow: Flow = l.flows.getOrOpen('127.0.0.1', (hop.address() as AddressInfo).port);
    l.flows.write(flow, [Buffer.from(OPTIONS)]);
    await until(() => flow.socket.destroyed, 3000, 'the connection is refused');
    assert.equal(received, 0);
    const text = await l.metrics.registry.getSingleMetricAsString('sipha_messages_dropped_total');
    assert.match(text, /tls-connect-failed/);
  });
});

describe('SIP over TLS: binding the public sockets', () => {
  it('is all or nothing: a TLS port taken by another process leaves nothing bound, and a later attempt works (review finding)', async () => {
    // Both ports below the ephemeral range: `listen(0)`'s port + 1 was once some resolver's (CI, stop 21).
    const tlsPort = await freeFixedPort();
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(tlsPort, '127.0.0.1', r));
    const settings: TlsSettings = { dir: first.dir, port: tlsPort, clientAuth: 'none', sni: new Map(), outboundCaFile: null };
    const log = createLogger('silent', 'test');
    const sipPort = await freeFixedPort();
    const proxy = new EdgeProxy(
      {
        publicAddress: '127.0.0.1',
        sipPort,
        serverHost: '127.0.0.1',
        serverPort: 9,
        egressPort: 0,
        linkConnections: 1,
        maxMessageBytes: 65535,
        tls: { settings, credentials: new TlsCredentials(settings, log) },
      },
      log,
      createMetrics(),
    );
    open.push(proxy);
    await proxy.start(true);
    await assert.rejects(
      proxy.openPublic(),
      new RegExp(`EADDRINUSE.*:${tlsPort}\\b`),
      'refused for the TLS port the squatter holds',
    );
    await new Promise<void>((r) => squatter.close(() => r()));
    await proxy.openPublic(); // before: the UDP and TCP sockets of the first attempt were still bound
    proxy.closePublic();
  });
});
