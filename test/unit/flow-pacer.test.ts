/**
 * Pacing of a client's TCP connection (sidecar/src/proxy/flow-pacer.ts, in
 * tcp-flows.ts): past SIPHA_TCP_FLOW_RATE messages a second the connection is
 * paused, nothing is dropped. What it does for other clients' latency under a
 * pumping client is measured by `npm run bench -- attack`.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { AddressRate } from '../../sidecar/src/proxy/address-rate.ts';
import { FlowPacer } from '../../sidecar/src/proxy/flow-pacer.ts';
import { DEFAULT_TCP_LIMITS, TcpFlows } from '../../sidecar/src/proxy/tcp-flows.ts';

describe('a flow pacer', () => {
  it("lets a second's worth through at once, then asks for a pause as long as the excess takes to refill", () => {
    const p = new FlowPacer(100, 0);
    for (let i = 0; i < 100; i++) assert.equal(p.take(0), 0, `message ${i + 1} of the burst`);
    assert.equal(p.take(0), 10, 'one over: 1/100 s');
    assert.equal(p.take(0), 20, 'two over');
    assert.equal(p.take(30), 0, 'three refilled in 30 ms (100 a second): the one taken fits');
    assert.equal(p.take(30), 10);
    assert.equal(p.take(60_000), 0, 'a long silence refills only one burst');
    for (let i = 1; i < 100; i++) p.take(60_000);
    assert.equal(p.take(60_000), 10);
  });
});

const options = (i: number) =>
  `OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK-${i}\r\nCall-ID: c${i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`;

describe('a client TCP connection over its rate', () => {
  it('is paused, and every message still arrives, in order', async () => {
    const metrics = createMetrics();
    const seen: number[] = [];
    const flows = new TcpFlows(
      '127.0.0.1',
      65535,
      createLogger('silent', 'test'),
      metrics,
      (bytes) => seen.push(Number(/Call-ID: c(\d+)/.exec(bytes.toString('latin1'))?.[1])),
      { ...DEFAULT_TCP_LIMITS, flowRate: 500 },
    );
    await flows.listen(0);
    const port = (flows as unknown as { server: net.Server }).server.address() as net.AddressInfo;
    const N = 1500;
    const client = net.connect(port.port, '127.0.0.1');
    client.write(Array.from({ length: N }, (_, i) => options(i)).join(''));
    const deadline = Date.now() + 20_000;
    while (seen.length < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    client.destroy();
    flows.close();
    assert.deepEqual(
      seen,
      Array.from({ length: N }, (_, i) => i),
      'all of them, in order',
    );
    const pauses = (await metrics.registry.getSingleMetric('sipha_tcp_flow_pauses_total')?.get())?.values[0]?.value ?? 0;
    assert.ok(pauses >= 1, `paused (${pauses} times)`);
  });

  it('is never paused when pacing is off', async () => {
    const metrics = createMetrics();
    let n = 0;
    const flows = new TcpFlows('127.0.0.1', 65535, createLogger('silent', 'test'), metrics, () => n++, {
      ...DEFAULT_TCP_LIMITS,
      flowRate: 0,
    });
    await flows.listen(0);
    const port = (flows as unknown as { server: net.Server }).server.address() as net.AddressInfo;
    const client = net.connect(port.port, '127.0.0.1');
    client.write(Array.from({ length: 1500 }, (_, i) => options(i)).join(''));
    const deadline = Date.now() + 20_000;
    while (n < 1500 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    client.destroy();
    flows.close();
    assert.equal(n, 1500);
    const pauses = (await metrics.registry.getSingleMetric('sipha_tcp_flow_pauses_total')?.get())?.values[0]?.value;
    assert.equal(pauses, 0);
  });
});

describe('connections of an address over its request rate (address-rate.ts, shared by the listeners)', () => {
  const start = async (headerTimeoutMs: number, rate: AddressRate) => {
    const seen: number[] = [];
    const flows = new TcpFlows(
      '127.0.0.1',
      65535,
      createLogger('silent', 'test'),
      createMetrics(),
      (bytes) => seen.push(Number(/Call-ID: c(\d+)/.exec(bytes.toString('latin1'))?.[1])),
      { ...DEFAULT_TCP_LIMITS, flowRate: 0, headerTimeoutMs },
    );
    flows.requestRate = rate;
    await flows.listen(0);
    const port = ((flows as unknown as { server: net.Server }).server.address() as net.AddressInfo).port;
    return { seen, flows, port };
  };
  const waitFor = async (ok: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  };

  it('a pause longer than the header timeout does not close it: the deadline stops while nothing is read', async () => {
    // 20 a second after a burst of 10: 30 messages owe 1 s, the header timeout is 300 ms.
    const { seen, flows, port } = await start(300, new AddressRate({ rate: 20, burst: 10, maxAddresses: 16 }));
    const client = net.connect(port, '127.0.0.1');
    let closed = false;
    client.on('close', () => {
      closed = true;
    });
    // 30 whole messages, then the first half of one more: a partial message waits through the pause.
    const last = options(30);
    client.write(Array.from({ length: 30 }, (_, i) => options(i)).join('') + last.slice(0, 20));
    await new Promise((r) => setTimeout(r, 1200));
    client.write(last.slice(20));
    await waitFor(() => seen.length === 31, 5000);
    const wasClosed = closed;
    client.destroy();
    flows.close();
    assert.equal(wasClosed, false, 'not closed as a slow header');
    assert.equal(seen.length, 31);
  });

  it('a new connection of an address in debt reads nothing until the debt is paid', async () => {
    const rate = new AddressRate({ rate: 10, burst: 5, maxAddresses: 16 });
    for (let i = 0; i < 15; i++) rate.take('127.0.0.1'); // 10 over: 1 s owed
    const { seen, flows, port } = await start(10_000, rate);
    const client = net.connect(port, '127.0.0.1');
    client.write(options(0));
    await new Promise((r) => setTimeout(r, 400));
    const early = seen.length;
    await waitFor(() => seen.length === 1, 3000);
    client.destroy();
    flows.close();
    assert.equal(early, 0, 'nothing read while the address owes');
    assert.equal(seen.length, 1, 'read once it is paid');
  });
});
