/** The tests' reader of Prometheus text exposition: absent is an error, never 0. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { familyNames, MetricAbsentError, parseExposition, readMetric } from '../lib/prom-text.ts';

const TEXT = `# HELP sipha_messages_total SIP messages handled, by path
# TYPE sipha_messages_total counter
sipha_messages_total{path="inbound"} 7
sipha_messages_total{path="to_client"} 3
# TYPE sipha_in_sync gauge
sipha_in_sync 0
# TYPE sipha_lag_seconds histogram
sipha_lag_seconds_bucket{le="0.001"} 1
sipha_lag_seconds_bucket{le="+Inf"} 2
sipha_lag_seconds_sum 0.0105
sipha_lag_seconds_count 2
# TYPE sipha_dropped_total counter
sipha_dropped_total{path="inbound",reason="bad \\"quote\\", comma"} 4
`;

describe('prom-text', () => {
  it('reads one series, a zero that is there, and the sum of the series a label subset selects', () => {
    assert.equal(readMetric(TEXT, 'sipha_messages_total', { path: 'inbound' }), 7);
    assert.equal(readMetric(TEXT, 'sipha_in_sync'), 0);
    assert.equal(readMetric(TEXT, 'sipha_messages_total'), 10);
    assert.equal(readMetric(TEXT, 'sipha_lag_seconds_count'), 2);
    assert.equal(readMetric(TEXT, 'sipha_dropped_total', { reason: 'bad "quote", comma' }), 4);
  });

  it('throws for an absent name, an absent label value, and a prefix of a real name', () => {
    for (const [name, labels] of [
      ['sipha_takeovers', {}],
      ['sipha_messages_total', { path: 'egress' }],
      ['sipha_messages', {}],
      ['sipha_lag_seconds', {}],
    ] as const) {
      assert.throws(() => readMetric(TEXT, name, labels), MetricAbsentError, name);
    }
  });

  it('knows each family by its TYPE line, histograms by their base name', () => {
    assert.deepEqual(
      [...familyNames(TEXT)],
      ['sipha_messages_total', 'sipha_in_sync', 'sipha_lag_seconds', 'sipha_dropped_total'],
    );
    assert.equal(parseExposition(TEXT).types.get('sipha_lag_seconds'), 'histogram');
  });

  it('refuses a line it cannot read rather than skipping it', () => {
    assert.throws(() => parseExposition('sipha_x{path="a"\n'), /not a sample line/);
  });
});
