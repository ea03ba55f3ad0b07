/**
 * What people look at, checked against a real pair on the netns bed: the
 * metric names follow Prometheus conventions, the test helper fails on a
 * series that is not there, every metric the Grafana dashboard and the alert
 * rules query is one the sidecar exports (a rename breaks this test), and a
 * takeover is counted and measured by the sidecar that takes over.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { dashboardExprs, metricFamiliesIn, renderAlertRules, ruleExprs } from '../lib/monitoring.ts';
import { type PairBed, pairBed, role } from '../lib/pair.ts';
import { until } from '../lib/procs.ts';
import { parseExposition } from '../lib/prom-text.ts';

// Rendered by helm once, before any suite's clock runs: on a cold CI run hack/test.sh is still
// building helm in the background when this file starts (the wait blocks, and a suite timer
// counted it: the cold run of stop 21 timed out here).
const alertRules = renderAlertRules();

describe('observability of a running pair', { timeout: 120_000 }, () => {
  let pb: PairBed;
  before(async () => {
    pb = await pairBed();
  });
  after(async () => {
    await pb?.bed.destroy();
  });

  it('reading a series the sidecar does not export is an error, never 0', () => {
    const { a } = pb;
    assert.equal(a.sidecar.metric('sipha_role', { role: 'master' }), 1);
    assert.throws(() => a.sidecar.metric('sipha_no_such_series_total'), /no series sipha_no_such_series_total/);
    assert.throws(() => a.sidecar.metric('sipha_role', { role: 'no-such-role' }), /no series sipha_role/);
    // A prefix of a real name is not that name.
    assert.throws(() => a.sidecar.metric('sipha_messages'), /no series sipha_messages/);
    assert.throws(() => a.sidecar.histogram('sipha_no_such_seconds'), /no histogram sipha_no_such_seconds/);
    const lag = a.sidecar.histogram('sipha_replication_lag_seconds');
    assert.equal(lag.at(-1)?.[0], Number.POSITIVE_INFINITY);
  });

  it('metric names follow Prometheus conventions: counters end in _total, nothing else does, units in base units', () => {
    for (const n of [pb.a, pb.b]) {
      const { types } = parseExposition(n.sidecar.scrape());
      assert.ok(types.size >= 15, `${types.size} families`);
      for (const [name, type] of types) {
        if (!name.startsWith('sipha_')) continue;
        if (type === 'counter') assert.match(name, /_total$/, `counter ${name}`);
        else assert.doesNotMatch(name, /_total$/, `${type} ${name} is called a total`);
        assert.doesNotMatch(name, /_(ms|milliseconds|us|kb|mb|mib)$|_(ms|milliseconds)_/, `${name}: base units (seconds, bytes)`);
        if (type === 'histogram') assert.match(name, /_(seconds|bytes)$/, `histogram ${name} says its unit`);
      }
      // The ones that were gauges or carried ms before (docs/observability.md, renames).
      assert.equal(types.get('sipha_takeovers_total'), 'counter');
      assert.equal(types.get('sipha_state_cache_refused_total'), 'counter');
      assert.equal(types.get('sipha_takeover_detect_to_serving_seconds'), 'histogram');
      assert.equal(types.get('sipha_replication_lag_window_seconds'), 'gauge');
    }
  });

  it("the local Kamailio's answer time to the probe is observed, on a traffic connection and on the probe's own", async () => {
    // The server's backlog as every message meets it (sipha_server_answer_seconds): the probe
    // goes out every second on each connection of the link, and its answer is timed.
    for (const [name, n] of [
      ['a', pb.a],
      ['b', pb.b],
    ] as const)
      for (const connection of ['traffic', 'probe'])
        await until(
          () => n.sidecar.metric('sipha_server_answer_seconds_count', { connection }) > 0,
          5000,
          `${name}'s probe answered on a ${connection} connection`,
        );
    const withinOneSecond = pb.a.sidecar.metric('sipha_server_answer_seconds_bucket', { connection: 'traffic', le: '1' });
    assert.ok(withinOneSecond >= 1, `an idle Kamailio answers within 1 s: ${withinOneSecond}`);
  });

  it('every metric the dashboard and the alert rules query is one the sidecar exports', () => {
    // Both roles: a family exported only by one of them still counts.
    const types = new Map<string, string>();
    for (const n of [pb.a, pb.b]) for (const [k, v] of parseExposition(n.sidecar.scrape()).types) types.set(k, v);
    const queries = [
      ...dashboardExprs().map((e) => ({ where: `dashboard ${e.where}`, expr: e.expr })),
      ...ruleExprs(alertRules).map((e) => ({ where: `alert ${e.alert}`, expr: e.expr })),
    ];
    const used = new Set<string>();
    const unknown: string[] = [];
    for (const q of queries) {
      const names = metricFamiliesIn(q.expr, types);
      assert.ok(names.length > 0, `${q.where} reads no sipha metric: ${q.expr}`);
      for (const name of names) {
        used.add(name);
        if (!types.has(name)) unknown.push(`${q.where}: ${name}`);
      }
    }
    assert.deepEqual(unknown, [], `not exported by the sidecar:\n${unknown.join('\n')}`);
    // What the issue asks the dashboard to show is there.
    for (const name of [
      'sipha_role',
      'sipha_term',
      'sipha_takeovers_total',
      'sipha_takeover_detect_to_serving_seconds',
      'sipha_replication_lag_seconds',
      'sipha_in_sync',
      'sipha_messages_dropped_total',
      'sipha_server_link_connections',
    ]) {
      assert.ok(used.has(name), `the dashboard or the alerts use ${name}`);
    }
  });

  it('a takeover is counted and its detect-to-serving time observed by the new master', async () => {
    const { a, b, bed } = pb;
    assert.equal(b.sidecar.metric('sipha_takeovers_total'), 0);
    assert.equal(b.sidecar.metric('sipha_takeover_detect_to_serving_seconds_count'), 0);
    await bed.stop(a.kamailio.child, 'SIGKILL');
    await until(() => role(b) === 'master', 5000, 'b takes over');
    await until(() => b.sidecar.metric('sipha_takeovers_total') === 1, 3000, 'b counted its takeover');
    assert.equal(b.sidecar.metric('sipha_takeover_detect_to_serving_seconds_count'), 1);
    const took = b.sidecar.metric('sipha_takeover_detect_to_serving_seconds_sum');
    assert.ok(took > 0 && took < 5, `detect-to-serving ${took} s`);
  });
});
