/**
 * The sidecar's Kubernetes side (sidecar/src/kube/, run as a process by
 * reporter-main.ts) against a real kube-apiserver that goes away and comes
 * back, and against RBAC that refuses and then allows. What must hold:
 * a role report lands once it can (the newest one), a fencing watch started
 * with the API server down still delivers the fence, and the terms recorded
 * for the pair are read back at start.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { kubeconfigFor, type Reporter, startReporter } from '../lib/operator.ts';
import { sleep, until } from '../lib/procs.ts';

const CRD = fileURLToPath(new URL('../../crds/siphapair.yaml', import.meta.url));
const POD = (name: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${name}\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: k\n`;
const PAIR = `apiVersion: sipha.io/v1alpha1\nkind: SipHaPair\nmetadata:\n  name: kp\n  namespace: default\nspec:\n  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n`;

describe("the sidecar's Kubernetes side on a real kube-apiserver", { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  const reporters: Reporter[] = [];
  const json = (args: string[]) => JSON.parse(cp.kubectl([...args, '-o', 'json']));
  const meta = (pod: string) => json(['get', 'pod', pod]).metadata;
  const reporter = (pod: string, env: Record<string, string> = {}, kubeconfig = cp.kubeconfig) => {
    const r = startReporter({ ...cp, kubeconfig }, 'default', pod, env);
    reporters.push(r);
    return r;
  };

  before(async () => {
    cp = await startControlPlane();
    cp.kubectl(['apply', '-f', CRD]);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
    for (const p of ['kp-0', 'kp-1', 'kq-0']) cp.kubectl(['apply', '-f', '-'], POD(p));
    cp.kubectl(['apply', '-f', '-'], PAIR);
  });
  after(async () => {
    for (const r of reporters) await r.stop();
    await cp?.stop();
  });

  it('reads back the highest term recorded for the pair: both pods (term and fence) and the pair status', async () => {
    cp.kubectl(['annotate', '--overwrite', 'pod', 'kp-0', 'sipha.io/term=5']);
    cp.kubectl(['annotate', '--overwrite', 'pod', 'kp-1', 'sipha.io/term=8', 'sipha.io/fenced-term=9']);
    cp.kubectl(['patch', 'shp', 'kp', '--subresource=status', '--type=merge', '-p', '{"status":{"term":4}}']);
    const a = reporter('kp-0');
    await a.waitFor(/^seeded term \d+.*$/m, 20000);
    assert.match(a.output(), /^seeded term 9$/m, 'the fence on kp-1 (9) is the highest');
    cp.kubectl(['patch', 'shp', 'kp', '--subresource=status', '--type=merge', '-p', '{"status":{"term":12}}']);
    const b = reporter('kp-1');
    await b.waitFor(/^seeded term \d+.*$/m, 20000);
    assert.match(b.output(), /^seeded term 12$/m, 'status.term (12) survives pods that lost their annotations');
    await a.stop();
    await b.stop();
  });

  it('a report made while the API server is down lands when it is back, and the newest report wins', async () => {
    const r = reporter('kp-0');
    await r.report('master', 13, 'elected');
    assert.equal(meta('kp-0').labels['sipha.io/role'], 'master');

    await cp.stopApiServer();
    try {
      const from = r.output().length;
      r.send('master', 15, 'peer-heartbeat-lost');
      r.send('backup', 16, 'higher-term-peer');
      await until(
        () =>
          (
            r
              .output()
              .slice(from)
              .match(/^error: /gm) ?? []
          ).length >= 3,
        20000,
        'attempts fail',
      );
      assert.equal(r.child.exitCode, null, 'the reporter keeps running');
      assert.match(r.output().slice(from), /^error: backup 16 /m, 'the newest report is the one retried');
    } finally {
      await cp.startApiServer();
    }
    await r.waitFor(/^reported backup 16$/m, 30000);
    const m = meta('kp-0');
    assert.equal(m.labels['sipha.io/role'], 'backup');
    assert.equal(m.annotations['sipha.io/term'], '16');
    assert.doesNotMatch(r.output(), /^reported master 15$/m, 'the replaced report was never made');
  });

  it('a fencing watch started while the API server is down delivers the fence once it is back, and heals after a restart', async () => {
    cp.kubectl(['annotate', 'pod', 'kp-1', 'sipha.io/fenced-term-']);
    let r: Reporter;
    await cp.stopApiServer();
    try {
      r = reporter('kp-1', { SIPHA_SEED_DEADLINE_MS: '1000' });
      await sleep(3000);
      assert.equal(r.child.exitCode, null, `the reporter must keep running:\n${r.output()}`);
    } finally {
      await cp.startApiServer();
    }
    cp.kubectl(['annotate', '--overwrite', 'pod', 'kp-1', 'sipha.io/fenced-term=17']);
    await r.waitFor(/^fenced 17$/m, 30000);

    // The operator lifts a fence (annotation removed); a later fence is delivered again.
    cp.kubectl(['annotate', 'pod', 'kp-1', 'sipha.io/fenced-term-']);
    await cp.stopApiServer();
    await sleep(1000);
    await cp.startApiServer();
    cp.kubectl(['annotate', '--overwrite', 'pod', 'kp-1', 'sipha.io/fenced-term=19']);
    await r.waitFor(/^fenced 19$/m, 30000);
    assert.equal((r.output().match(/^fenced 17$/gm) ?? []).length, 1, 'a fence is delivered once, across reconnects');
    // The term seed, run with the API server down, gave up after its deadline rather than hold the start.
    assert.match(r.output(), /^seeded term 0 missing pod\/kp-0,pod\/kp-1,siphapair\/kp$/m);
  });

  it('a report the API server refuses (RBAC) is retried until a Role allows it', async () => {
    cp.kubectl(['create', 'serviceaccount', 'kq-sidecar']);
    const kubeconfig = kubeconfigFor(cp, 'default', 'kq-sidecar');
    const r = reporter('kq-0', { SIPHA_SEED_DEADLINE_MS: '500' }, kubeconfig);
    r.send('master', 21, 'elected');
    await r.waitFor(/^error: [\s\S]*forbidden/im, 20000);
    await sleep(1000);
    assert.equal(meta('kq-0').labels?.['sipha.io/role'], undefined, 'refused: nothing written');
    cp.kubectl(['create', 'role', 'kq-sidecar', '--verb=patch', '--resource=pods', '--resource-name=kq-0']);
    cp.kubectl(['create', 'rolebinding', 'kq-sidecar', '--role=kq-sidecar', '--serviceaccount=default:kq-sidecar']);
    await r.waitFor(/^reported master 21$/m, 30000);
    assert.equal(meta('kq-0').labels['sipha.io/role'], 'master');
    assert.equal(meta('kq-0').annotations['sipha.io/term'], '21');
  });
});
