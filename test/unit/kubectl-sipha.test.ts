/**
 * The pure parts of `kubectl sipha` (issue 11 item 4): both sidecars' logs
 * merged by time, the lag read from a metrics page, the command line as
 * kubectl users write it. The plugin end to end: test/e2e/kubectl-plugin.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { parseArgs, parseDuration, UsageError } from '../../cli/src/args.ts';
import { lagP99 } from '../../cli/src/lag.ts';
import { lineTime, mergeLogs } from '../../cli/src/merge-logs.ts';
import { pairStatus, pairsTable } from '../../cli/src/render.ts';
import { targetOrdinal } from '../../cli/src/switchover.ts';
import { SIDECAR_CONTAINER } from '../../contract/names.ts';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { statefulSet } from '../../operator/src/desired.ts';
import { testPair } from '../lib/siphapair-fixture.ts';

const pino = (time: number | string, msg: string) => JSON.stringify({ level: 30, time, pid: 1, msg });

describe('kubectl sipha: logs merged by time', () => {
  it('interleaves the two sidecars by pino time, each line prefixed with its pod as kubectl logs --prefix does', () => {
    const merged = mergeLogs([
      { pod: 'p-0', container: 'sipha-sidecar', text: `${pino(100, 'a0')}\n${pino(300, 'c0')}\n${pino(500, 'e0')}\n` },
      { pod: 'p-1', container: 'sipha-sidecar', text: `${pino(200, 'b1')}\n${pino(400, 'd1')}\n` },
    ]);
    assert.deepEqual(
      merged.map((l) => `${l.slice(0, l.indexOf(' '))} ${JSON.parse(l.slice(l.indexOf(' ') + 1)).msg}`),
      [
        '[pod/p-0/sipha-sidecar] a0',
        '[pod/p-1/sipha-sidecar] b1',
        '[pod/p-0/sipha-sidecar] c0',
        '[pod/p-1/sipha-sidecar] d1',
        '[pod/p-0/sipha-sidecar] e0',
      ],
    );
  });

  it('keeps a non-JSON line (a stack trace) after the line before it in its pod; equal times keep the pods in order', () => {
    const merged = mergeLogs([
      { pod: 'p-0', container: 'c', text: `${pino(100, 'boom')}\n    at f (x.ts:1)\n${pino(300, 'late')}` },
      { pod: 'p-1', container: 'c', text: `node: warning\n${pino(100, 'same time')}\n${pino(200, 'mid')}\n` },
    ]);
    assert.deepEqual(
      merged.map((l) => l.replace(/^\[pod\/(p-\d)\/c\] /, '$1 ').replace(/\{.*"msg":"([^"]+)"\}/, '$1')),
      ['p-1 node: warning', 'p-0 boom', 'p-0     at f (x.ts:1)', 'p-1 same time', 'p-1 mid', 'p-0 late'],
    );
  });

  it('reads pino epoch-ms and ISO times; anything else has no time', () => {
    assert.equal(lineTime(pino(1764417600123, 'x')), 1764417600123);
    assert.equal(lineTime(pino('2026-11-29T12:00:00.123Z', 'x')), Date.parse('2026-11-29T12:00:00.123Z'));
    assert.equal(lineTime('{"msg":"no time"}'), undefined);
    assert.equal(lineTime('{not json'), undefined);
    assert.equal(lineTime('plain text'), undefined);
  });

  it('asks for the container the operator actually names the sidecar', () => {
    const pair = testPair({}, 'n');
    const sts = statefulSet(pair) as { spec: { template: { spec: { containers: Array<{ name: string }> } } } };
    assert.ok(
      sts.spec.template.spec.containers.some((c) => c.name === SIDECAR_CONTAINER),
      JSON.stringify(sts.spec.template.spec.containers.map((c) => c.name)),
    );
  });
});

describe('kubectl sipha: lag p99 from the sidecar metrics page', () => {
  it('takes the 0.99 quantile of sipha_replication_lag_window_seconds (or _ms); NaN (a backup) or absent is unknown, never 0', () => {
    const page = [
      '# TYPE sipha_replication_lag_ms gauge',
      'sipha_replication_lag_ms{quantile="0.5"} 0.4',
      'sipha_replication_lag_ms{quantile="0.99"} 1.2345',
    ].join('\n');
    assert.equal(lagP99(page), 1.23);
    assert.equal(lagP99('sipha_replication_lag_ms{quantile="0.99"} NaN'), undefined);
    assert.equal(lagP99('sipha_role 1'), undefined);
    // The same gauge under its Prometheus-conventional name, in seconds.
    assert.equal(lagP99('sipha_replication_lag_window_seconds{quantile="0.99"} 0.0012345'), 1.23);
  });
});

describe('kubectl sipha: the command line', () => {
  it('takes kubectl global flags in either form, anywhere', () => {
    const a = parseArgs(['-n', 'voip', 'switchover', 'edge', '--to=edge-1', '--context', 'prod', '--timeout', '2m']);
    assert.equal(a.command, 'switchover');
    assert.deepEqual(a.positional, ['edge']);
    assert.equal(a.namespace, 'voip');
    assert.equal(a.context, 'prod');
    assert.equal(a.flags.get('to'), 'edge-1');
    assert.equal(parseDuration(a.flags.get('timeout') as string), 120_000);
    assert.equal(parseArgs(['logs', 'x', '-c', 'sip-server', '--kubeconfig=/k']).kubeconfig, '/k');
    assert.equal(parseArgs(['logs', 'x', '-c', 'sip-server']).flags.get('container'), 'sip-server');
  });

  it('rejects what it does not know, saying what', () => {
    assert.throws(
      () => parseArgs(['status', '--watch']),
      (e: Error) => e instanceof UsageError && /--watch/.test(e.message),
    );
    assert.throws(() => parseArgs(['status', '-n']), /flag needs a value: -n/);
    assert.throws(() => parseDuration('soon'), /not a duration: soon/);
    assert.equal(parseDuration('90'), 90_000);
    assert.equal(parseDuration('1h'), 3_600_000);
  });

  it('--to takes an ordinal or the pod name of the pair, nothing else', () => {
    assert.equal(targetOrdinal('edge', '1'), '1');
    assert.equal(targetOrdinal('edge', 'edge-0'), '0');
    assert.throws(() => targetOrdinal('edge', 'other-1'), /--to must be 0, 1, edge-0 or edge-1 \(got other-1\)/);
    assert.throws(() => targetOrdinal('edge', '2'), UsageError);
  });
});

describe('kubectl sipha: what status prints', () => {
  const now = new Date('2026-11-29T12:10:00Z');
  const pair = {
    apiVersion: 'sipha.io/v1alpha1',
    kind: 'SipHaPair',
    metadata: { name: 'edge', namespace: 'voip', uid: 'u' },
    spec: { vip: { address: '198.18.0.100', mode: 'arp' }, ports: { metrics: 9090 } },
    status: {
      phase: 'Replicating',
      master: 'edge-1',
      backup: 'edge-0',
      term: 2,
      failoverCount: 1,
      lastFailover: { time: '2026-11-29T12:00:00Z', reason: 'peer-server-dead', from: 'edge-0', to: 'edge-1', gapMs: 40 },
      conditions: [{ type: 'Replicating', status: 'True', reason: 'BackupInSync', message: 'edge-0 follows edge-1' }],
    },
  } as unknown as SipHaPair;
  const pod = (name: string, role: string, node: string): V1Pod => ({
    metadata: {
      name,
      labels: { 'sipha.io/role': role },
      annotations: { 'sipha.io/term': '2', 'sipha.io/in-sync': 'true', 'sipha.io/role-since': '2026-11-29T12:00:00Z' },
    },
    spec: { nodeName: node, containers: [] },
  });

  it('one line per pair, the last failover as age, from -> to and reason', () => {
    assert.match(
      pairsTable([pair], now),
      /^edge\s+Replicating\s+edge-1\s+edge-0\s+2\s+yes\s+1\s+10m ago \(edge-0 -> edge-1, peer-server-dead\)$/m,
    );
  });

  it('the lag a sidecar reported in ms, and "-" for a pod whose lag is unknown', () => {
    const out = pairStatus(
      pair,
      [pod('edge-0', 'backup', 'node-a'), pod('edge-1', 'master', 'node-b')],
      new Map([['edge-1', 1.23]]),
      now,
    );
    assert.match(out, /^edge-1\s+master\s+2\s+yes\s+1\.23 ms\s+10m ago\s+-\s+node-b$/m);
    assert.match(out, /^edge-0\s+backup\s+2\s+yes\s+-\s+10m ago\s+-\s+node-a$/m);
    assert.match(out, /^Last role changes \(kubectl sipha history for all\):\n {2}none recorded$/m);
  });
});
