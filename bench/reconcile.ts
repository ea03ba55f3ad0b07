/**
 * npm run bench -- reconcile   [--quick]
 *
 * The operator on a real kube-apiserver + etcd + kube-controller-manager:
 * - apply_to_objects_ms: `kubectl apply` of one SipHaPair -> all 7 owned
 *   objects readable (median over trials);
 * - pairs_100_reconcile_s: 100 SipHaPairs applied at once -> every one has
 *   its StatefulSet and a status with observedGeneration;
 * - role_to_status_ms: a sidecar reports master/backup on its pod -> the
 *   pair's status shows it.
 * Baseline in the same run: the bare API round trip (create + read of a
 * ConfigMap) on the same server, to tell operator time from API time.
 */
import * as k8s from '@kubernetes/client-node';
import { type ControlPlane, startControlPlane } from '../test/lib/control-plane.ts';
import { startOperator, startReporter } from '../test/lib/operator.ts';
import { median, percentile, round, table, writeFigures } from './lib/report.ts';

const quick = process.argv.includes('--quick');
const TRIALS = quick ? 5 : 15;
const MANY = 100;
const CRD = new URL('../crds/siphapair.yaml', import.meta.url).pathname;

const pairYaml = (name: string) => `apiVersion: sipha.io/v1alpha1
kind: SipHaPair
metadata:
  name: ${name}
spec:
  sipServer:
    image: kamailio:5.6
  vip:
    address: 198.18.0.100
`;

function clients(cp: ControlPlane) {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(cp.kubeconfig);
  return { kc, objects: k8s.KubernetesObjectApi.makeApiClient(kc), custom: kc.makeApiClient(k8s.CustomObjectsApi) };
}

async function exists(objects: k8s.KubernetesObjectApi, apiVersion: string, kind: string, name: string): Promise<boolean> {
  try {
    await objects.read({ apiVersion, kind, metadata: { name, namespace: 'default' } });
    return true;
  } catch {
    return false;
  }
}

const OWNED = (n: string): Array<[string, string, string]> => [
  ['apps/v1', 'StatefulSet', n],
  ['v1', 'Service', `${n}-peers`],
  ['v1', 'Secret', `${n}-replication`],
  ['v1', 'ServiceAccount', `${n}-sidecar`],
  ['rbac.authorization.k8s.io/v1', 'Role', `${n}-sidecar`],
  ['rbac.authorization.k8s.io/v1', 'RoleBinding', `${n}-sidecar`],
  ['policy/v1', 'PodDisruptionBudget', n],
];

async function pollUntil(check: () => Promise<boolean>, timeoutMs: number, everyMs = 10): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (await check()) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`not done within ${timeoutMs} ms`);
}

const cp = await startControlPlane();
try {
  cp.kubectl(['apply', '-f', CRD]);
  cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
  const op = await startOperator(cp, { identity: 'bench', metricsPort: 18090 });
  await pollUntil(async () => (await op.metric('sipha_operator_leader')) === 1, 15000, 100);
  const { objects, custom } = clients(cp);

  // Baseline: a bare create + read round trip on the same API server.
  const baseline: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const t0 = performance.now();
    await objects.create({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: `base-${i}`, namespace: 'default' },
      data: { a: 'b' },
    } as k8s.KubernetesObject);
    await objects.read({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `base-${i}`, namespace: 'default' } });
    baseline.push(performance.now() - t0);
  }

  // One pair at a time: apply -> all owned objects present.
  const single: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const name = `one-${i}`;
    const t0 = performance.now();
    await objects.create(k8s.loadYaml(pairYaml(name)) as k8s.KubernetesObject);
    await pollUntil(
      async () => (await Promise.all(OWNED(name).map(([a, k, n]) => exists(objects, a, k, n)))).every(Boolean),
      30000,
    );
    single.push(performance.now() - t0);
  }

  // Role report -> status.
  const roleToStatus: number[] = [];
  const r0 = startReporter(cp, 'default', 'one-0-0');
  const r1 = startReporter(cp, 'default', 'one-0-1');
  await pollUntil(
    async () => cp.kubectlTry(['get', 'pod', 'one-0-0']).code === 0 && cp.kubectlTry(['get', 'pod', 'one-0-1']).code === 0,
    30000,
    100,
  );
  await r1.report('backup', 1, 'joined');
  for (let i = 0; i < TRIALS; i++) {
    const [m, b] = i % 2 === 0 ? [r0, r1] : [r1, r0];
    const want = i % 2 === 0 ? 'one-0-0' : 'one-0-1';
    const t0 = performance.now();
    await m.report('master', 2 + i, 'bench');
    await pollUntil(async () => {
      const o = (await custom.getNamespacedCustomObject({
        group: 'sipha.io',
        version: 'v1alpha1',
        namespace: 'default',
        plural: 'siphapairs',
        name: 'one-0',
      })) as { status?: { master?: string } };
      return o.status?.master === want;
    }, 10000);
    roleToStatus.push(performance.now() - t0);
    await b.report('backup', 2 + i, 'bench');
  }
  await r0.stop();
  await r1.stop();

  // 100 pairs at once.
  const names = Array.from({ length: MANY }, (_, i) => `many-${i}`);
  const t0 = performance.now();
  await Promise.all(names.map((n) => objects.create(k8s.loadYaml(pairYaml(n)) as k8s.KubernetesObject)));
  const reconciled = new Set<string>();
  await pollUntil(
    async () => {
      const list = (await custom.listNamespacedCustomObject({
        group: 'sipha.io',
        version: 'v1alpha1',
        namespace: 'default',
        plural: 'siphapairs',
      })) as {
        items: Array<{ metadata: { name: string; generation: number }; status?: { observedGeneration?: number } }>;
      };
      for (const it of list.items)
        if (it.metadata.name.startsWith('many-') && it.status?.observedGeneration === it.metadata.generation)
          reconciled.add(it.metadata.name);
      if (reconciled.size < MANY) return false;
      const sts = (await objects.list('apps/v1', 'StatefulSet', 'default')).items.filter((s) =>
        s.metadata?.name?.startsWith('many-'),
      );
      return sts.length === MANY;
    },
    120000,
    250,
  );
  const manyS = (performance.now() - t0) / 1000;
  await op.stop();

  const figures = {
    apply_to_objects_ms_p50: round(median(single), 0),
    apply_to_objects_ms_max: round(Math.max(...single), 0),
    pairs_100_reconcile_s: round(manyS, 2),
    role_to_status_ms_p50: round(median(roleToStatus), 0),
    role_to_status_ms_p99: round(percentile(roleToStatus, 99), 0),
    api_roundtrip_ms_p50: round(median(baseline), 1),
    trials: TRIALS,
    note: 'real kube-apiserver + etcd + kube-controller-manager on loopback, same 2-core machine',
  };
  table(
    'operator reconcile (real API server)',
    ['figure', 'value', 'target'],
    [
      ['bare API create+read, p50 ms (baseline)', figures.api_roundtrip_ms_p50, '-'],
      ['apply -> 7 owned objects, p50 ms', figures.apply_to_objects_ms_p50, '< 2000'],
      ['apply -> 7 owned objects, max ms', figures.apply_to_objects_ms_max, '-'],
      ['100 pairs applied at once -> all reconciled, s', figures.pairs_100_reconcile_s, '< 30'],
      ['role report -> status, p50 ms', figures.role_to_status_ms_p50, '< 1000'],
      ['role report -> status, p99 ms', figures.role_to_status_ms_p99, '-'],
    ],
  );
  writeFigures('reconcile', figures);
} finally {
  await cp.stop();
}
