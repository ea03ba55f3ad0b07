/**
 * The chart's alert rules and the Grafana dashboard's queries, checked by the
 * real tools: helm renders the PrometheusRule, promtool (built from its Go
 * module by hack/build-promtool.sh) checks the rules and runs their unit tests
 * (test/alerts/sipha-alerts.test.yaml: each alert firing and not firing), and
 * parses every dashboard query. Which metric names they may use is checked
 * against a running sidecar in observability.test.ts.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ALERT_TESTS,
  dashboardExprs,
  promtool,
  promtoolPath,
  renderAlertRules,
  ruleExprs,
  withoutGrafanaVariables,
} from '../lib/monitoring.ts';

const ALERTS = ['SiphaNoBackupInSync', 'SiphaRoleFlapping', 'SiphaReplicationLagHigh', 'SiphaTwoMasters'];

describe('alert rules and dashboard queries (helm + promtool)', { timeout: 900_000 }, () => {
  let bin: string;
  let dir: string;
  before(() => {
    bin = promtoolPath();
    dir = mkdtempSync(join(tmpdir(), 'sipha-alerts-'));
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the PrometheusRule is off by default', () => {
    assert.throws(() => renderAlertRules(['monitoring.prometheusRule.enabled=false']), /could not find template|no spec/);
  });

  it('promtool check rules accepts the rendered rules, and they hold the four alerts', () => {
    const rules = renderAlertRules();
    writeFileSync(join(dir, 'rules.yaml'), rules);
    const r = promtool(bin, ['check', 'rules', join(dir, 'rules.yaml')]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS: 4 rules found/);
    assert.deepEqual(
      ruleExprs(rules).map((e) => e.alert),
      ALERTS,
    );
  });

  it('promtool test rules: every alert fires when it should and stays quiet when it should', () => {
    writeFileSync(join(dir, 'rules.yaml'), renderAlertRules());
    copyFileSync(ALERT_TESTS, join(dir, 'alerts.test.yaml'));
    const r = promtool(bin, ['test', 'rules', join(dir, 'alerts.test.yaml')]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS/);
  });

  it('the unit tests can fail: a threshold changed by a chart value breaks the expected alert', () => {
    // The lag test expects p99 99.5 ms to fire; with a 150 ms threshold it must not, so promtool fails.
    writeFileSync(join(dir, 'rules.yaml'), renderAlertRules(['monitoring.prometheusRule.lagP99Seconds=0.15']));
    copyFileSync(ALERT_TESTS, join(dir, 'alerts.test.yaml'));
    const r = promtool(bin, ['test', 'rules', join(dir, 'alerts.test.yaml')]);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /SiphaReplicationLagHigh/);
  });

  it('every dashboard query is valid PromQL (promtool parses it as a recording rule)', () => {
    const exprs = dashboardExprs();
    assert.ok(exprs.length >= 15, `${exprs.length} queries`);
    const rules = [
      'groups:',
      '  - name: dashboard',
      '    rules:',
      ...exprs.flatMap((e, i) => [
        `      - record: sipha:dashboard:${i}`,
        `        expr: ${JSON.stringify(withoutGrafanaVariables(e.expr))}`,
      ]),
    ].join('\n');
    writeFileSync(join(dir, 'dashboard.rules.yaml'), `${rules}\n`);
    const r = promtool(bin, ['check', 'rules', join(dir, 'dashboard.rules.yaml')]);
    assert.equal(r.code, 0, `${r.out}\n${exprs.map((e, i) => `${i}: ${e.where}: ${e.expr}`).join('\n')}`);
  });
});
