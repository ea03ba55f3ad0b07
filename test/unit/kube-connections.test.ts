/**
 * API calls reuse their connections: a loopback HTTPS server (a certificate
 * from a throwaway CA, verified by the client as an in-cluster client verifies
 * the API server's) counts the TLS connections client-node opens. What it
 * answers is irrelevant; the Lease semantics are in test/e2e/lease-witness.
 */
import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { reuseConnections } from '../../contract/kube-connections.ts';
import { makeTestCa } from '../lib/tls-certs.ts';

describe('connections to the API server', () => {
  let server: https.Server;
  let tlsConnections = 0;
  let ca = '';
  let url = '';

  before(async () => {
    const testCa = makeTestCa(path.join(tmpdir(), `sipha-kube-conn-${process.pid}`));
    const leaf = testCa.issue('api', ['127.0.0.1']);
    ca = testCa.cert;
    server = https.createServer({ key: leaf.key, cert: leaf.cert }, (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: 'l' }, spec: {} }));
    });
    server.on('secureConnection', () => tlsConnections++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const kubeConfig = () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: url, caData: Buffer.from(ca).toString('base64'), skipTLSVerify: false }],
      users: [{ name: 'u', token: 'not-checked' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    return kc;
  };

  const readTimes = async (kc: k8s.KubeConfig, n: number) => {
    // Two clients from one config, as the sidecar makes (the witness and the role reporter).
    const leases = kc.makeApiClient(k8s.CoordinationV1Api);
    const more = kc.makeApiClient(k8s.CoordinationV1Api);
    const before = tlsConnections;
    for (let i = 0; i < n; i++) await (i % 2 ? more : leases).readNamespacedLease({ name: 'l', namespace: 'ns' });
    return tlsConnections - before;
  };

  it('client-node 2.0 alone opens a TLS connection per request (why reuseConnections exists)', async () => {
    // When an upgrade of client-node pools by itself, this fails: reuseConnections can go.
    assert.equal(await readTimes(kubeConfig(), 6), 6);
  });

  it('one connection serves every request of a config made to reuse them', async () => {
    const kc = reuseConnections(kubeConfig());
    // A connection goes back to undici's pool a turn after its body ends: a request sent at
    // once after the first may open a second one. Then no more.
    const opened = await readTimes(kc, 6);
    assert.ok(opened >= 1 && opened <= 2, `${opened} connections for 6 requests in a row`);
    // Calling it again changes nothing.
    assert.equal(reuseConnections(kc), kc);
    assert.equal(await readTimes(kc, 4), 0, 'the connection is still open and reused');
  });

  it('requests in flight together open a few connections, and later requests reuse them', async () => {
    const kc = reuseConnections(kubeConfig());
    const api = kc.makeApiClient(k8s.CoordinationV1Api);
    const before = tlsConnections;
    await Promise.all([0, 1, 2].map(() => api.readNamespacedLease({ name: 'l', namespace: 'ns' })));
    const concurrent = tlsConnections - before;
    assert.ok(concurrent >= 1 && concurrent <= 3, `${concurrent} connections for 3 requests at once`);
    assert.equal(await readTimes(kc, 5), 0);
  });
});
