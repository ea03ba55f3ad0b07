/**
 * /metrics (Prometheus), /healthz (the process serves), /readyz (the link to
 * the local SIP server is up): what kubelet probes and Prometheus scrape.
 */
import http from 'node:http';
import type { Registry } from 'prom-client';

export function startHttp(port: number, registry: Registry, ready: () => boolean): Promise<http.Server> {
  const server = http.createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('Content-Type', registry.contentType);
      res.end(await registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok\n');
    } else if (req.url === '/readyz') {
      const ok = ready();
      res.statusCode = ok ? 200 : 503;
      res.end(ok ? 'ready\n' : 'not ready: no link to the SIP server\n');
    } else {
      res.statusCode = 404;
      res.end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve(server));
  });
}
