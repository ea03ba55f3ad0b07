/**
 * /metrics (Prometheus), /healthz (the process serves), /readyz (see
 * `ready`), and POST /switchover (planned handover; accepted from loopback
 * only: `kubectl port-forward`, or `kubectl exec` into the pod).
 */
import http from 'node:http';
import type { Registry } from 'prom-client';

export interface HttpControl {
  /** Why this sidecar is not ready, or null when it is. */
  notReady: () => string | null;
  /** Present in a pair: hand the master role over to the in-sync backup. */
  switchover?: () => Promise<{ ok: boolean; reason: string }>;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

export function startHttp(port: number, registry: Registry, control: HttpControl): Promise<http.Server> {
  const server = http.createServer(async (req, res) => {
    if (req.url === '/metrics') {
      res.setHeader('Content-Type', registry.contentType);
      res.end(await registry.metrics());
    } else if (req.url === '/healthz') {
      res.end('ok\n');
    } else if (req.url === '/readyz') {
      const why = control.notReady();
      res.statusCode = why === null ? 200 : 503;
      res.end(why === null ? 'ready\n' : `not ready: ${why}\n`);
    } else if (req.url === '/switchover' && req.method === 'POST' && control.switchover) {
      if (!LOOPBACK.test(req.socket.remoteAddress ?? '')) {
        res.statusCode = 403;
        res.end('switchover is accepted from loopback only\n');
        return;
      }
      const r = await control.switchover();
      res.statusCode = r.ok ? 200 : 409;
      res.end(`${r.ok ? 'switched over' : 'refused'}: ${r.reason}\n`);
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
