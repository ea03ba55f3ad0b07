/**
 * The Helm chart installs on a real API server, and least privilege holds:
 * the operator reconciles with nothing but the chart's ServiceAccount, and a
 * pair's sidecar identity may patch its own two pods and no other pod.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { type Operator, startOperator, startReporter } from '../lib/operator.ts';
import { until } from '../lib/procs.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const pairYaml = (name: string) =>
  `apiVersion: sipha.io/v1alpha1\nkind: SipHaPair\nmetadata:\n  name: ${name}\n  namespace: default\nspec:\n  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n`;

/** A kubeconfig that authenticates as a ServiceAccount (TokenRequest API). */
function kubeconfigFor(cp: ControlPlane, namespace: string, sa: string): string {
  const token = cp.kubectl(['create', 'token', sa, '-n', namespace, '--duration=1h']).trim();
  const path = join(cp.dir, `kubeconfig-${sa}`);
  writeFileSync(
    path,
    `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${cp.server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: ${token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: ${namespace}\ncurrent-context: x\n`,
  );
  return path;
}

describe('Helm chart and RBAC on a real API server', { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  let op: Operator | undefined;
  const helm = (args: string[]) => runHelm(cp, args);

  before(async () => {
    cp = await startControlPlane();
  });
  after(async () => {
    await op?.stop();
    await cp?.stop();
  });

  it('ships the same CRD as crds/', () => {
    assert.equal(
      readFileSync(join(ROOT, 'charts/sipha/crds/siphapair.yaml'), 'utf8'),
      readFileSync(join(ROOT, 'crds/siphapair.yaml'), 'utf8'),
    );
  });

  it('lints, refuses values outside its schema, and installs', () => {
    assert.match(helm(['lint', join(ROOT, 'charts/sipha')]), /0 chart\(s\) failed/);
    assert.throws(() => helm(['template', 't', join(ROOT, 'charts/sipha'), '--set', 'replicas=9']), /maximum: got 9, want 5/);
    helm(['install', 'sipha', join(ROOT, 'charts/sipha'), '--namespace', 'sipha-system', '--create-namespace', '--wait=false']);
    const dep = JSON.parse(cp.kubectl(['get', 'deployment', 'sipha-operator', '-n', 'sipha-system', '-o', 'json']));
    assert.equal(dep.spec.replicas, 2);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
  });

  it('the operator reconciles a pair with only the chart ServiceAccount’s permissions', async () => {
    const kubeconfig = kubeconfigFor(cp, 'sipha-system', 'sipha-operator');
    // The chart's Role allows the leader Lease in the release namespace only.
    op = await startOperator({ ...cp, kubeconfig }, { identity: 'chart-sa', metricsPort: 18082, leaseNamespace: 'sipha-system' });
    await until(async () => (await op?.metric('sipha_operator_leader')) === 1, 15000, 'the chart identity leads');
    cp.kubectl(['apply', '-f', '-'], pairYaml('rbac-pair'));
    await until(
      () =>
        [
          'statefulset/rbac-pair',
          'role/rbac-pair-sidecar',
          'rolebinding/rbac-pair-sidecar',
          'secret/rbac-pair-replication',
          'pdb/rbac-pair',
        ].every((o) => cp.kubectlTry(['get', o]).code === 0),
      30000,
      'objects reconciled by the chart identity',
    );
    await until(
      () => JSON.parse(cp.kubectl(['get', 'shp', 'rbac-pair', '-o', 'json'])).status?.phase !== undefined,
      15000,
      'status written',
    );
    assert.doesNotMatch(op.output(), /forbidden/i, op.output().slice(-2000));
  });

  it("a pair's sidecar identity patches its own pods and is refused any other pod", async () => {
    await until(() => cp.kubectlTry(['get', 'pod', 'rbac-pair-0']).code === 0, 30000, 'pods created');
    cp.kubectl(
      ['apply', '-f', '-'],
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: bystander\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: k\n',
    );
    const kubeconfig = kubeconfigFor(cp, 'default', 'rbac-pair-sidecar');
    const mine = startReporter({ ...cp, kubeconfig }, 'default', 'rbac-pair-0');
    const other = startReporter({ ...cp, kubeconfig }, 'default', 'bystander');
    try {
      // It reads back the pair's recorded terms (both pods, the pair's status) with nothing missing.
      await mine.waitFor(/^seeded term \d+.*$/m, 20000);
      assert.match(mine.output(), /^seeded term \d+$/m, mine.output());
      await mine.report('master', 1, 'rbac-test');
      assert.equal(
        JSON.parse(cp.kubectl(['get', 'pod', 'rbac-pair-0', '-o', 'json'])).metadata.labels['sipha.io/role'],
        'master',
      );
      await assert.rejects(other.report('master', 1, 'rbac-test'), /forbidden|403/i);
      assert.equal(
        JSON.parse(cp.kubectl(['get', 'pod', 'bystander', '-o', 'json'])).metadata.labels?.['sipha.io/role'],
        undefined,
      );
    } finally {
      await mine.stop();
      await other.stop();
    }
  });

  it('allowedVipRanges: the API server refuses a pair outside them, and the operator refuses one that got past', async () => {
    helm([
      'upgrade',
      'sipha',
      join(ROOT, 'charts/sipha'),
      '--namespace',
      'sipha-system',
      '--reuse-values',
      '--set',
      'allowedVipRanges={198.18.0.96/28}',
      '--wait=false',
    ]);
    const outside = pairYaml('vip-outside').replace('address: 198.18.0.100', 'address: 198.18.0.1');
    // The policy takes effect once the API server has compiled it (a second or so).
    let refusal = '';
    await until(
      () => {
        const r = cp.kubectlTry(['apply', '-f', '-'], outside);
        refusal = r.err;
        if (r.code === 0) cp.kubectl(['delete', 'shp', 'vip-outside', '--wait=false']);
        return r.code !== 0;
      },
      15000,
      'the policy refuses 198.18.0.1',
    );
    assert.match(refusal, /spec\.vip\.address 198\.18\.0\.1 is outside the allowed VIP ranges \(198\.18\.0\.96\/28\)/);
    assert.equal(cp.kubectlTry(['apply', '-f', '-'], pairYaml('vip-inside')).code, 0, 'a VIP inside the range is accepted');

    // Defence in depth: a pair that exists from before the policy (or got past it) is left alone by
    // an operator started with the ranges (the one from the test above had none: stopped first).
    await op?.stop();
    cp.kubectl(['delete', 'validatingadmissionpolicybinding', 'sipha-operator-allowed-vips']);
    // (A new name: an earlier attempt above may have been accepted before the policy was live.)
    const past = pairYaml('vip-past').replace('address: 198.18.0.100', 'address: 198.18.0.1');
    await until(() => cp.kubectlTry(['apply', '-f', '-'], past).code === 0, 15000, 'created without the policy');
    const kubeconfig = kubeconfigFor(cp, 'sipha-system', 'sipha-operator');
    op = await startOperator(
      { ...cp, kubeconfig },
      { identity: 'ranges', metricsPort: 18083, leaseNamespace: 'sipha-system', args: ['--allowed-vip-ranges=198.18.0.96/28'] },
    );
    await until(
      () => {
        const st = JSON.parse(cp.kubectl(['get', 'shp', 'vip-past', '-o', 'json'])).status;
        return st?.conditions?.some((c: { type: string; reason: string }) => c.type === 'Ready' && c.reason === 'VipNotAllowed');
      },
      20000,
      'Ready False, VipNotAllowed',
    );
    assert.equal(cp.kubectlTry(['get', 'statefulset', 'vip-past']).code, 1, 'nothing created for it');
    assert.match(cp.kubectl(['get', 'events', '--field-selector', 'involvedObject.name=vip-past']), /VipNotAllowed/);
    await until(() => cp.kubectlTry(['get', 'statefulset', 'vip-inside']).code === 0, 20000, 'the pair inside is reconciled');
  });
});

function runHelm(cp: ControlPlane, args: string[]): string {
  try {
    return execFileSync(join(cp.bin, 'helm'), ['--kubeconfig', cp.kubeconfig, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string };
    throw new Error(`helm ${args.join(' ')}: ${err.stderr ?? ''}${err.stdout ?? ''}`);
  }
}
