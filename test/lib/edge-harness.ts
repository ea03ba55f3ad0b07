/** An edge proxy on loopback with a stand-in SIP server behind it, for unit tests of its paths. */
import net from 'node:net';
import { createLogger } from '../../sidecar/src/log.ts';
import { createMetrics } from '../../sidecar/src/metrics.ts';
import { EdgeProxy } from '../../sidecar/src/proxy/edge-proxy.ts';
import { until } from './procs.ts';

/** An edge proxy on a free port with a stand-in SIP server behind it; resolves the server's end of the link once it is up. */
export async function edgeWithServer(linkToken?: string) {
  let resolveSide: (s: net.Socket) => void = () => {};
  const serverSide = new Promise<net.Socket>((r) => {
    resolveSide = r;
  });
  const server = net.createServer((s) => resolveSide(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const sipPort = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const metrics = createMetrics();
  const proxy = new EdgeProxy(
    {
      publicAddress: '127.0.0.1',
      sipPort,
      serverHost: '127.0.0.1',
      serverPort: (server.address() as net.AddressInfo).port,
      egressPort: 0,
      linkConnections: 1,
      maxMessageBytes: 65535,
      ...(linkToken ? { linkToken } : {}),
    },
    createLogger('silent', 'test'),
    metrics,
  );
  await proxy.start();
  await until(() => proxy.serverReady, 3000, 'the link is up');
  return { proxy, server, sipPort, serverSide, metrics };
}
