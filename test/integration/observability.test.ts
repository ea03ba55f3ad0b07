/**
 * What people look at, checked against a real pair on the netns bed: the
 * metric names follow Prometheus conventions, the test helper fails on a
 * series that is not there, every metric the Grafana dashboard and the alert
 * rules query is one the sidecar exports (a rename breaks this test), and a
 * takeover is counted and measured by the sidecar that takes over.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type PairBed, pairBed, role } from '../lib/pair.ts';
import { until } from '../lib/procs.ts';

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
