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
import { makeTestCa } from '../lib/tls-certs.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OPERATOR_SA = 'system:serviceaccount:sipha-system:sipha-operator';
const pairYaml = (name: string) =>
  `apiVersion: sipha.io/v1alpha1\nkind: SipHaPair\nmetadata:\n  name: ${name}\n  namespace: default\nspec:\n  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n`;

/**
 * A kubeconfig that authenticates as a ServiceAccount (TokenRequest API); with
 * `pod`, a token bound to that pod, as the kubelet gives each pod's containers.
 */
function kubeconfigFor(cp: ControlPlane, namespace: string, sa: string, pod?: string): string {
  const bound = pod ? ['--bound-object-kind', 'Pod', '--bound-object-name', pod] : [];
  const token = cp.kubectl(['create', 'token', sa, '-n', namespace, '--duration=1h', ...bound]).trim();
  const path = join(cp.dir, `kubeconfig-${sa}${pod ? `-${pod}` : ''}`);
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
    // Scoped to the namespace the pairs live in: the least-privilege install.
    helm([
      'install',
      'sipha',
      join(ROOT, 'charts/sipha'),
      '--namespace',
      'sipha-system',
      '--create-namespace',
      '--set',
      'watchNamespace=default',
      '--wait=false',
    ]);
    const dep = JSON.parse(cp.kubectl(['get', 'deployment', 'sipha-operator', '-n', 'sipha-system', '-o', 'json']));
    assert.equal(dep.spec.replicas, 2);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
  });

  it('with watchNamespace the operator’s rights are a Role in that namespace; a ClusterRole only when it watches all', () => {
    const rbac = (set: string[]) =>
      helm(['template', 'sipha', join(ROOT, 'charts/sipha'), '--namespace', 'sipha-system', ...set])
        .split(/^---$/m)
        .filter((d) => /^kind: (Cluster)?Role(Binding)?$/m.test(d) && !/-leader$/m.test(d))
        .map((d) => `${/^kind: (\S+)/m.exec(d)?.[1]} ${/^ {2}namespace: (\S+)/m.exec(d)?.[1] ?? '(cluster)'}`);
    assert.deepEqual(rbac(['--set', 'watchNamespace=pairs']), ['Role pairs', 'RoleBinding pairs']);
    assert.deepEqual(rbac([]), ['ClusterRole (cluster)', 'ClusterRoleBinding (cluster)']);
    // Installed with watchNamespace=default: nothing outside it.
    const can = (verb: string, what: string, ns: string[]) =>
      cp.kubectlTry(['auth', 'can-i', verb, what, ...ns, '--as', OPERATOR_SA]).code === 0;
    assert.equal(can('create', 'statefulsets', ['-n', 'default']), true);
    assert.equal(can('create', 'statefulsets', ['-n', 'kube-system']), false);
    assert.equal(can('patch', 'pods', ['-n', 'kube-system']), false);
    assert.equal(can('create', 'rolebindings', ['-n', 'kube-system']), false);
    assert.equal(can('list', 'siphapairs.sipha.io', ['--all-namespaces']), false);
  });

  it('the operator cannot list or watch Secrets and holds no verb it does not use', () => {
    const can = (verb: string, what: string) =>
      cp.kubectlTry(['auth', 'can-i', verb, what, '-n', 'default', '--as', OPERATOR_SA]).code === 0;
    // The replication key is created once and rotated by merge patches (decision 0012); the
    // Secrets spec.tls names are read by name (decision 0013). Never listed or watched: the
    // operator reads only Secrets whose names it is given.
    assert.equal(can('create', 'secrets'), true);
    assert.equal(can('patch', 'secrets'), true);
    assert.equal(can('get', 'secrets'), true);
    for (const verb of ['list', 'watch', 'update', 'delete']) assert.equal(can(verb, 'secrets'), false, `${verb} secrets`);
    // A CA bundle spec.tls names may be a ConfigMap: read by name, nothing else.
    assert.equal(can('get', 'configmaps'), true);
    for (const verb of ['list', 'watch', 'patch']) assert.equal(can(verb, 'configmaps'), false, `${verb} configmaps`);
    // Owned objects go by owner references: no delete (pods only, for the rolling upgrade);
    // server-side apply needs no update.
    for (const what of [
      'statefulsets.apps',
      'daemonsets.apps',
      'services',
      'serviceaccounts',
      'roles.rbac.authorization.k8s.io',
      'rolebindings.rbac.authorization.k8s.io',
      'poddisruptionbudgets.policy',
      'siphapairs.sipha.io',
    ])
      for (const verb of ['delete', 'update', 'deletecollection']) assert.equal(can(verb, what), false, `${verb} ${what}`);
    for (const [verb, what] of [
      ['patch', 'events'],
      ['update', 'siphapairs.sipha.io/status'],
      ['create', 'pods'],
      ['update', 'pods'],
      ['deletecollection', 'pods'],
      ['create', 'configmaps'],
      ['escalate', 'roles.rbac.authorization.k8s.io'],
      ['bind', 'roles.rbac.authorization.k8s.io'],
    ] as const)
      assert.equal(can(verb, what), false, `${verb} ${what}`);
  });

  it('the operator reconciles a pair with only the chart ServiceAccount’s permissions', async () => {
    const kubeconfig = kubeconfigFor(cp, 'sipha-system', 'sipha-operator');
    // The chart's Role allows the leader Lease in the release namespace only, the rest in default only.
    op = await startOperator(
      { ...cp, kubeconfig },
      { identity: 'chart-sa', metricsPort: 18082, leaseNamespace: 'sipha-system', args: ['--namespace=default'] },
    );
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
    // A reconcile of a pair whose key exists already (create answers AlreadyExists) is not an error.
    const reconciles = await op.metric('sipha_operator_applies_total');
    cp.kubectl(['annotate', 'shp', 'rbac-pair', 'test/poke=1']);
    await until(async () => ((await op?.metric('sipha_operator_applies_total')) ?? 0) > reconciles, 15000, 'reconciled again');
    assert.doesNotMatch(op.output(), /forbidden|reconcile failed/i, op.output().slice(-2000));
  });

  it('the chart identity reads the Secret and the ConfigMap a pair’s spec.tls names (get by name, decision 0013)', async () => {
    const ca = makeTestCa(join(cp.dir, 'tls-ca'));
    const leaf = ca.issue('rbac-tls', ['sip.example.com']);
    cp.kubectl(['create', 'secret', 'tls', 'rbac-tls', `--cert=${leaf.dir}/tls.crt`, `--key=${leaf.dir}/tls.key`]);
    cp.kubectl(['create', 'configmap', 'rbac-peers-ca', `--from-file=ca.crt=${ca.certFile}`]);
    cp.kubectl(
      ['apply', '-f', '-'],
      `${pairYaml('rbac-tls')}  tls:\n    secretName: rbac-tls\n    outboundCA:\n      name: rbac-peers-ca\n`,
    );
    const tlsReady = () =>
      (JSON.parse(cp.kubectl(['get', 'shp', 'rbac-tls', '-o', 'json'])).status?.conditions ?? []).find(
        (c: { type: string }) => c.type === 'TLSReady',
      );
    await until(() => tlsReady()?.status === 'True', 20000, 'TLSReady True with the chart identity');
    assert.doesNotMatch(op?.output() ?? '', /forbidden|TLSSecretUnreadable/i);
    cp.kubectl(['delete', 'shp', 'rbac-tls', '--wait=false']);
  });

  it('the SIP server container gets no API token; the sidecar does, and the pods are Guaranteed', async () => {
    await until(() => cp.kubectlTry(['get', 'pod', 'rbac-pair-0']).code === 0, 30000, 'pods created');
    // The pod as the API server admitted it (its ServiceAccount admission adds the token volume).
    const pod = JSON.parse(cp.kubectl(['get', 'pod', 'rbac-pair-0', '-o', 'json']));
    const spec = pod.spec;
    assert.equal(spec.automountServiceAccountToken, false);
    type Mount = { name: string; mountPath: string };
    type Container = { name: string; volumeMounts?: Mount[]; resources?: { requests?: object; limits?: object } };
    const container = (name: string) => spec.containers.find((c: Container) => c.name === name) as Container;
    const tokenMounts = (c: Container) =>
      (c.volumeMounts ?? []).filter((m) => m.mountPath.startsWith('/var/run/secrets/kubernetes.io'));
    assert.deepEqual(tokenMounts(container('sip-server')), [], 'no token in the SIP server container');
    const [mount] = tokenMounts(container('sipha-sidecar'));
    assert.equal(mount?.mountPath, '/var/run/secrets/kubernetes.io/serviceaccount');
    const volume = spec.volumes.find((v: { name: string }) => v.name === mount?.name);
    assert.ok(
      volume?.projected?.sources?.some((s: { serviceAccountToken?: object }) => s.serviceAccountToken),
      JSON.stringify(spec.volumes),
    );
    // The pair key: files of the Secret in the sidecar container alone, never an environment
    // variable (/proc/<pid>/environ), never in the SIP server container (decision 0012).
    type Env = { name: string; valueFrom?: { secretKeyRef?: { key: string } } };
    for (const c of spec.containers as Array<Container & { env?: Env[] }>) {
      const fromSecret = (c.env ?? []).filter((e) => e.valueFrom?.secretKeyRef).map((e) => e.valueFrom?.secretKeyRef?.key);
      assert.deepEqual(fromSecret, ['link-token'], `${c.name}: only the link token comes from the Secret by environment`);
    }
    const keyVolume = spec.volumes.find(
      (v: { secret?: { secretName: string } }) => v.secret?.secretName === 'rbac-pair-replication',
    );
    assert.ok(keyVolume, JSON.stringify(spec.volumes));
    const mountsOf = (c: Container) => (c.volumeMounts ?? []).filter((m) => m.name === keyVolume.name);
    assert.equal(mountsOf(container('sipha-sidecar')).length, 1, 'the sidecar mounts the key files');
    assert.deepEqual(mountsOf(container('sip-server')), [], 'the SIP server does not');
    // QoS is computed by the API server when it admits the pod (no kubelet needed).
    assert.equal(pod.status.qosClass, 'Guaranteed');
    for (const c of spec.containers as Container[]) assert.deepEqual(c.resources?.requests, c.resources?.limits, c.name);
  });

  it("a pair's sidecar patches its own pod's sipha keys only: not its peer, not another pod, not the image", async () => {
    await until(() => cp.kubectlTry(['get', 'pod', 'rbac-pair-1']).code === 0, 30000, 'pods created');
    cp.kubectl(
      ['apply', '-f', '-'],
      'apiVersion: v1\nkind: Pod\nmetadata:\n  name: bystander\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: k\n',
    );
    // The token the kubelet would mount into rbac-pair-0's sidecar: bound to that pod.
    const kubeconfig = kubeconfigFor(cp, 'default', 'rbac-pair-sidecar', 'rbac-pair-0');
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

    const asSidecar = (args: string[]) => cp.kubectlTry(['--kubeconfig', kubeconfig, ...args]);
    const patch = (pod: string, body: object) =>
      asSidecar(['patch', 'pod', pod, '-n', 'default', '--type', 'merge', '-p', JSON.stringify(body)]);
    const refused = (r: { code: number; err: string }, why: RegExp) => {
      assert.notEqual(r.code, 0, 'accepted');
      assert.match(r.err, why);
    };
    // Its peer: RBAC allows both pods of the pair (one ServiceAccount); the policy refuses.
    refused(
      patch('rbac-pair-1', { metadata: { labels: { 'sipha.io/role': 'fenced' } } }),
      /a sipha sidecar may patch only its own pod: rbac-pair-1 is not rbac-pair-0/,
    );
    // Its own pod, beyond its keys.
    const image = (pod: string) =>
      JSON.parse(cp.kubectl(['get', 'pod', pod, '-o', 'json'])).spec.containers.find(
        (c: { name: string }) => c.name === 'sip-server',
      ).image;
    refused(
      asSidecar([
        'patch',
        'pod',
        'rbac-pair-0',
        '-n',
        'default',
        '--type',
        'json',
        '-p',
        JSON.stringify([{ op: 'replace', path: '/spec/containers/0/image', value: 'evil:1' }]),
      ]),
      /may not change a pod's spec/,
    );
    assert.equal(image('rbac-pair-0'), 'k');
    refused(patch('rbac-pair-0', { metadata: { labels: { 'sipha.io/pair': 'other' } } }), /only the sipha\.io\/role label/);
    refused(patch('rbac-pair-0', { metadata: { labels: { app: 'x' } } }), /only the sipha\.io\/role label/);
    refused(
      // (the operator's fence: a sidecar could otherwise write one on itself, or lift one)
      patch('rbac-pair-0', { metadata: { annotations: { 'sipha.io/fenced-term': '0' } } }),
      /only the annotations it writes/,
    );
    refused(patch('rbac-pair-0', { metadata: { annotations: { 'sipha.io/handover': '9' } } }), /only the annotations it writes/);
    refused(patch('rbac-pair-0', { metadata: { finalizers: ['x/y'] } }), /owner references or finalizers/);
    // Its own keys on its own pod: allowed.
    assert.equal(
      patch('rbac-pair-0', { metadata: { labels: { 'sipha.io/role': 'backup' }, annotations: { 'sipha.io/term': '2' } } }).code,
      0,
    );
    // A token not bound to a pod (as `kubectl create token` makes by default) patches nothing.
    const unbound = kubeconfigFor(cp, 'default', 'rbac-pair-sidecar');
    const r = cp.kubectlTry([
      '--kubeconfig',
      unbound,
      'patch',
      'pod',
      'rbac-pair-0',
      '--type',
      'merge',
      '-p',
      '{"metadata":{"labels":{"sipha.io/role":"master"}}}',
    ]);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /bound to no pod/);
    // And it reads its pair's pods by name only: no list of every pod, no other pod.
    refused(asSidecar(['get', 'pods', '-n', 'default']), /forbidden/i);
    refused(asSidecar(['get', 'pod', 'bystander', '-n', 'default']), /forbidden/i);
    assert.equal(asSidecar(['get', 'pod', 'rbac-pair-1', '-n', 'default']).code, 0);
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
      {
        identity: 'ranges',
        metricsPort: 18083,
        leaseNamespace: 'sipha-system',
        args: ['--allowed-vip-ranges=198.18.0.96/28', '--namespace=default'],
      },
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
