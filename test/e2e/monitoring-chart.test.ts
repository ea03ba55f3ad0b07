/**
 * The chart's monitoring objects on a real API server with the Prometheus
 * Operator's own CRDs: the PodMonitor, the PrometheusRule and the dashboard
 * ConfigMap are accepted under strict field validation (a misspelt field or a
 * wrong type is refused, not pruned), and none is rendered by default.
 * promtool's checks of the rules are in test/e2e/alerts.test.ts.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { CHART, DASHBOARD, monitoringCrds } from '../lib/monitoring.ts';

const ALL_ON = [
  'monitoring.podMonitor.enabled=true',
  'monitoring.prometheusRule.enabled=true',
  'monitoring.grafanaDashboard.enabled=true',
];

describe('monitoring objects of the chart on a real API server', { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  const template = (sets: string[]) =>
    execFileSync(
      join(cp.bin, 'helm'),
      ['template', 'sipha', CHART, '--namespace', 'sipha-system', ...sets.flatMap((s) => ['--set', s])],
      { encoding: 'utf8' },
    );

  before(async () => {
    cp = await startControlPlane();
    for (const crd of monitoringCrds()) cp.kubectl(['apply', '--server-side', '-f', crd]);
    for (const name of ['podmonitors', 'prometheusrules']) {
      cp.kubectl(['wait', '--for=condition=Established', `crd/${name}.monitoring.coreos.com`, '--timeout=30s']);
    }
    cp.kubectl(['create', 'namespace', 'sipha-system']);
  });
  after(async () => {
    await cp?.stop();
  });

  it('renders none of them by default', () => {
    const out = template([]);
    assert.doesNotMatch(out, /kind: (PodMonitor|PrometheusRule)/);
    assert.doesNotMatch(out, /sipha-dashboard/);
  });

  it('the API server accepts all three under strict validation, as rendered', () => {
    const manifests = template(ALL_ON)
      .split(/^---$/m)
      .filter((d) => /kind: (PodMonitor|PrometheusRule)|name: sipha-sipha-dashboard/.test(d));
    assert.equal(manifests.length, 3);
    const r = cp.kubectlTry(['apply', '--validate=strict', '-n', 'sipha-system', '-f', '-'], manifests.join('\n---\n'));
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    assert.doesNotMatch(r.err, /unknown field/);

    const pm = JSON.parse(cp.kubectl(['get', 'podmonitor', 'sipha-sipha-sidecars', '-n', 'sipha-system', '-o', 'json']));
    const ep = pm.spec.podMetricsEndpoints[0];
    assert.equal(ep.port, 'metrics');
    assert.ok(
      ep.relabelings.some(
        (x: { sourceLabels: string[]; targetLabel: string }) =>
          x.targetLabel === 'pair' && x.sourceLabels[0] === '__meta_kubernetes_pod_label_sipha_io_pair',
      ),
      'the pair label the alerts group by',
    );
    const rule = JSON.parse(cp.kubectl(['get', 'prometheusrule', 'sipha-sipha-alerts', '-n', 'sipha-system', '-o', 'json']));
    assert.deepEqual(
      rule.spec.groups[0].rules.map((x: { alert: string }) => x.alert),
      ['SiphaNoBackupInSync', 'SiphaRoleFlapping', 'SiphaReplicationLagHigh', 'SiphaTwoMasters'],
    );
    const cm = JSON.parse(cp.kubectl(['get', 'configmap', 'sipha-sipha-dashboard', '-n', 'sipha-system', '-o', 'json']));
    assert.equal(cm.metadata.labels.grafana_dashboard, '1');
    assert.deepEqual(JSON.parse(cm.data['sipha.json']), JSON.parse(readFileSync(DASHBOARD, 'utf8')));
  });

  it('a PodMonitor field the CRD does not know is refused (the check can fail)', () => {
    const bad = template(['monitoring.podMonitor.enabled=true'])
      .split(/^---$/m)
      .find((d) => /kind: PodMonitor/.test(d))
      ?.replace('podMetricsEndpoints:', 'podMetricEndpoints:');
    assert.ok(bad);
    const r = cp.kubectlTry(['apply', '--validate=strict', '-n', 'sipha-system', '--dry-run=server', '-f', '-'], bad);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.err, /unknown field/);
  });
});
