/**
 * The sidecar's API calls are bounded: an attempt against an API server that
 * accepts the connection and never answers is cut off by its timeout and
 * retried, and the newest report is the one that lands. A loopback HTTP
 * server stands in for the API server's transport only (what it answers is
 * irrelevant here); everything about real API semantics is in test/e2e/.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import { type RoleReport, RoleReporter, withSignal } from '../../sidecar/src/kube/role-reporter.ts';
import { until } from '../lib/procs.ts';

interface Seen {
  method: string;
  url: string;
  contentType: string | undefined;
  body: string;
}

describe('bounded API calls from the sidecar', () => {
  let server: http.Server;
  let kc: k8s.KubeConfig;
  const seen: Seen[] = [];
  /** While true, requests are accepted and held unanswered (release() answers them). */
  let hang = false;
  const held: http.ServerResponse[] = [];
  const answer = (res: http.ServerResponse) => {
    if (res.destroyed || res.writableEnded) return;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p-0', namespace: 'ns' } }));
  };
  const release = () => {
    hang = false;
    for (const res of held.splice(0)) answer(res);
  };

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => {
        body += d.toString();
      });
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], body });
        if (hang) held.push(res);
        else answer(res);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  it('withSignal keeps the patch content type and aborts a request that hangs', async () => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    seen.length = 0;
    await core.patchNamespacedPod(
      { namespace: 'ns', name: 'p-0', body: { metadata: { labels: { a: 'b' } } } },
      withSignal(new AbortController().signal, k8s.PatchStrategy.MergePatch),
    );
    assert.equal(seen[0]?.method, 'PATCH');
    assert.equal(seen[0]?.contentType, 'application/merge-patch+json');
    assert.deepEqual(JSON.parse(seen[0]?.body ?? ''), { metadata: { labels: { a: 'b' } } });

    hang = true;
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(new Error('gave up')), 200);
      const t0 = Date.now();
      await assert.rejects(core.readNamespacedPod({ namespace: 'ns', name: 'p-0' }, withSignal(ac.signal)));
      assert.ok(Date.now() - t0 < 2000, `aborted after ${Date.now() - t0} ms`);
    } finally {
      release();
    }
  });

  it('a report whose patch hangs times out, is retried, and the newest report lands', async () => {
    seen.length = 0;
    hang = true;
    const landed: RoleReport[] = [];
    const failures: string[] = [];
    const reporter = new RoleReporter(kc, 'ns', 'p-0', {
      attemptTimeoutMs: 150,
      minBackoffMs: 20,
      maxBackoffMs: 40,
      reported: (r) => landed.push(r),
      failed: (_r, err) => failures.push((err as Error).message),
    });
    try {
      reporter.report({ role: 'master', term: 3, reason: 'peer-heartbeat-lost' });
      await until(() => failures.length >= 2, 5000, 'two attempts timed out');
      assert.match(failures[0] as string, /timed out after 150 ms/);
      assert.ok(seen.filter((s) => s.method === 'PATCH').length >= 2, 'each timed-out attempt was a new request');
      assert.equal(landed.length, 0);
      // A third attempt of the stale report is in flight when the newer one comes; the
      // server then answers it: it must not land (the label would say master for a backup).
      await until(() => seen.filter((s) => s.method === 'PATCH').length >= 3, 5000, 'a third attempt is in flight');
      reporter.report({ role: 'backup', term: 4, reason: 'higher-term-peer' });
      release();
      await until(() => landed.length > 0, 5000, 'the report lands once the server answers');
      assert.deepEqual(
        landed.map((r) => `${r.role} ${r.term}`),
        ['backup 4'],
        'only the newest report was made',
      );
      const last = JSON.parse(seen.at(-1)?.body ?? '{}');
      assert.equal(last.metadata.labels['sipha.io/role'], 'backup');
      assert.equal(last.metadata.annotations['sipha.io/term'], '4');
      assert.equal(reporter.pending, false);
    } finally {
      reporter.stop();
      release();
    }
  });
});
