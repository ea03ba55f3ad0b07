/**
 * The chart's alert rules and the Grafana dashboard's queries, checked by the
 * real tools: helm renders the PrometheusRule, promtool (from Debian's prometheus
 * package, hack/build-promtool.sh) checks the rules and runs their unit tests
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

  it('the unit tests can fail: chart values that change an alert break its expected firing or quiet case', () => {
    // p99 99.5 ms must fire; with a 150 ms threshold it does not. Without "for", the brief
    // overlap of a takeover and a 30 s resync fire at once, which the quiet cases forbid.
    for (const [set, alerts] of [
      ['monitoring.prometheusRule.lagP99Seconds=0.15', ['SiphaReplicationLagHigh']],
      ['monitoring.prometheusRule.twoMastersFor="0s"', ['SiphaTwoMasters']],
      ['monitoring.prometheusRule.noBackupInSyncFor="0s"', ['SiphaNoBackupInSync']],
      // A failover and its failback (2 takeovers) must not count as flapping.
      ['monitoring.prometheusRule.flapping={"window":"15m","takeovers":2}', ['SiphaRoleFlapping']],
    ] as const) {
      writeFileSync(join(dir, 'rules.yaml'), renderAlertRules([set]));
      copyFileSync(ALERT_TESTS, join(dir, 'alerts.test.yaml'));
      const r = promtool(bin, ['test', 'rules', join(dir, 'alerts.test.yaml')]);
      assert.notEqual(r.code, 0, `${set}: ${r.out}`);
      const failed = [...r.out.matchAll(/alertname: (\w+), time/g)].map((m) => m[1]);
      assert.deepEqual([...new Set(failed)], alerts, `${set}: ${r.out}`);
    }
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
