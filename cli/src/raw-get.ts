/**
 * A plain GET on the API server, as `kubectl get --raw` makes it, for the
 * endpoints that answer text (pod logs, a pod's metrics through the proxy):
 * client-node's generated calls expect JSON and lose the server's message on
 * an error. Credentials and CA come from the kubeconfig; bounded by a timeout.
 */
import http from 'node:http';
import https from 'node:https';
import type * as k8s from '@kubernetes/client-node';

export interface RawResponse {
  status: number;
  body: string;
}

export async function rawGet(kc: k8s.KubeConfig, path: string, timeoutMs: number): Promise<RawResponse> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error('no cluster server in the kubeconfig');
  const opts: https.RequestOptions = { method: 'GET', timeout: timeoutMs };
  await kc.applyToHTTPSOptions(opts);
  return new Promise((resolve, reject) => {
    const url = new URL(path, server);
    const req = (url.protocol === 'http:' ? http : https).request(url, opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The API server's message from an error body (a Status object), else the body itself. */
export function statusMessage(r: RawResponse): string {
  try {
    const s = JSON.parse(r.body) as { message?: string };
    if (s.message) return s.message;
  } catch {}
  return `HTTP ${r.status}: ${r.body.trim().slice(0, 300)}`;
}
