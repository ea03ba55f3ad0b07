/**
 * status.history and the failover record (issue 11 item 3), as pure status
 * rules: one entry per new master term, what the new master's sidecar
 * measured copied from its pod, bounded, and an Event per change.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadYaml, type V1Pod } from '@kubernetes/client-node';
import { HISTORY_LIMIT } from '../../contract/names.ts';
import type { SipHaPairStatus } from '../../contract/siphapair.ts';
import { nextStatus, observe } from '../../operator/src/status.ts';
import { pairWithStatus } from '../lib/siphapair-fixture.ts';

interface Report {
  role: string;
  term: number;
  reason?: string;
  inSync?: boolean;
  gapMs?: number;
  registrations?: number;
  since?: string;
}
const pod = (name: string, r: Report): V1Pod => ({
  metadata: {
    name,
    labels: { 'sipha.io/role': r.role },
    annotations: {
      'sipha.io/term': String(r.term),
      ...(r.reason ? { 'sipha.io/role-reason': r.reason } : {}),
      ...(r.inSync !== undefined ? { 'sipha.io/in-sync': String(r.inSync) } : {}),
      ...(r.gapMs !== undefined ? { 'sipha.io/takeover-gap-ms': String(r.gapMs) } : {}),
      ...(r.registrations !== undefined ? { 'sipha.io/takeover-registrations': String(r.registrations) } : {}),
      ...(r.since ? { 'sipha.io/role-since': r.since } : {}),
    },
  },
});
const pair = pairWithStatus;
const vip = { ok: true, reason: 'Held', message: 'held' };
const at = (s: number) => new Date(Date.UTC(2026, 10, 29, 12, 0, s));

/** Feeds successive pod reports through nextStatus, as successive reconciles do. */
function run(steps: V1Pod[][]): Array<ReturnType<typeof nextStatus>> {
  let status: SipHaPairStatus | undefined;
  return steps.map((pods, i) => {
    const r = nextStatus(pair(status), observe(pods), at(i), vip);
    status = r.status;
    return r;
  });
}

describe('operator: failover history in status', () => {
  it('records the first election, then a failover with what the new master measured, and an Event for each', () => {
    const steps = run([
      [pod('p-0', { role: 'master', term: 1, reason: 'elected', since: '2026-11-29T11:00:00.000Z', gapMs: 3 })],
      [
        pod('p-0', { role: 'master', term: 1, reason: 'elected', inSync: true }),
        pod('p-1', { role: 'backup', term: 1, reason: 'peer-is-master', inSync: true }),
      ],
      [
        pod('p-0', { role: 'resigned', term: 1, reason: 'server-dead' }),
        pod('p-1', {
          role: 'master',
          term: 2,
          reason: 'peer-server-dead',
          gapMs: 41,
          registrations: 1000,
          since: '2026-11-29T12:00:02.345Z',
        }),
      ],
    ]);
    const last = steps.at(-1);
    assert.ok(last);
    const h = last.status.history ?? [];
    assert.equal(h.length, 2);
    assert.deepEqual(h[0], {
      time: '2026-11-29T11:00:00.000Z',
      term: 1,
      to: 'p-0',
      reason: 'elected',
      detectToServingMs: 3,
      change: 'p-0 became master at term 1 (elected): serving 3 ms after detection',
    });
    assert.deepEqual(h[1], {
      time: '2026-11-29T12:00:02.345Z',
      term: 2,
      from: 'p-0',
      to: 'p-1',
      reason: 'peer-server-dead',
      detectToServingMs: 41,
      wasInSync: true,
      registrations: 1000,
      change:
        'p-1 took over from p-0 at term 2 (peer-server-dead): serving 41 ms after detection, it was an in-sync backup, holding 1000 registrations',
    });
    // Steady reconciles add nothing.
    assert.equal(steps[1]?.status.history?.length, 1);
    const failover = last.transitions.find((t) => t.reason === 'Failover');
    assert.equal(failover?.type, 'Warning');
    assert.equal(failover?.message, h[1]?.change);
    assert.deepEqual(
      steps[0]?.transitions.filter((t) => t.reason === 'MasterElected').map((t) => t.message),
      [h[0]?.change],
    );
  });

  it('a takeover seen across a moment with no master is still a failover from the old master (counted, Event, lastFailover)', () => {
    // The master's sidecar resigned (its Kamailio died) and the operator reconciled
    // before the backup's takeover report landed: status went through NoMaster.
    const steps = run([
      [
        pod('p-0', { role: 'master', term: 1, reason: 'elected', inSync: true }),
        pod('p-1', { role: 'backup', term: 1, reason: 'peer-is-master', inSync: true }),
      ],
      [pod('p-0', { role: 'resigned', term: 1, reason: 'server-dead' }), pod('p-1', { role: 'backup', term: 1, inSync: true })],
      [
        pod('p-0', { role: 'resigned', term: 1, reason: 'server-dead' }),
        pod('p-1', { role: 'master', term: 2, reason: 'peer-resigned', gapMs: 12 }),
      ],
    ]);
    assert.equal(steps[1]?.status.phase, 'NoMaster');
    const s = steps[2]?.status;
    assert.equal(s?.failoverCount, 1);
    assert.equal(s?.lastFailover?.from, 'p-0');
    assert.equal(s?.lastFailover?.to, 'p-1');
    assert.equal(s?.lastFailover?.gapMs, 12);
    assert.deepEqual(
      steps[2]?.transitions.map((t) => t.reason),
      ['Failover', 'PhaseDegraded'],
    );
    const entry = s?.history?.at(-1);
    assert.equal(entry?.from, 'p-0');
    assert.equal(entry?.wasInSync, true, 'the backup said it held the state while no pod was master');
    const gap = steps[1]?.status.conditions?.find((c) => c.type === 'Replicating');
    assert.deepEqual([gap?.status, gap?.reason], ['False', 'NoMasterBackupInSync']);
  });

  it('says when the new master was not in sync, and records a re-election of the same pod at a newer term', () => {
    const steps = run([
      [
        pod('p-0', { role: 'master', term: 1, reason: 'elected', inSync: false }),
        pod('p-1', { role: 'backup', term: 1, reason: 'peer-is-master', inSync: false }),
      ],
      [pod('p-0', { role: 'starting', term: 1 }), pod('p-1', { role: 'master', term: 2, reason: 'peer-heartbeat-lost' })],
      [pod('p-0', { role: 'starting', term: 1 }), pod('p-1', { role: 'master', term: 3, reason: 'witness-granted' })],
    ]);
    const h = steps[2]?.status.history ?? [];
    assert.deepEqual(
      h.map((e) => [e.from, e.to, e.term, e.wasInSync]),
      [
        [undefined, 'p-0', 1, undefined],
        ['p-0', 'p-1', 2, false],
        ['p-1', 'p-1', 3, undefined],
      ],
    );
    assert.match(h[1]?.change ?? '', /it was NOT in sync/);
    assert.equal(h[2]?.change, 'p-1 became master again at term 3 (witness-granted)');
    assert.equal(steps[2]?.status.failoverCount, 1, 'a re-election is not a failover');
    assert.deepEqual(
      steps[2]?.transitions.map((t) => [t.reason, t.message]),
      [['MasterReelected', h[2]?.change]],
    );
  });

  it(`keeps the last ${HISTORY_LIMIT} changes, oldest dropped first`, () => {
    const flips: V1Pod[][] = [];
    for (let term = 1; term <= HISTORY_LIMIT + 5; term++) {
      const [m, b] = term % 2 ? ['p-0', 'p-1'] : ['p-1', 'p-0'];
      flips.push([pod(m, { role: 'master', term, reason: 'flip' }), pod(b, { role: 'backup', term })]);
    }
    const h = run(flips).at(-1)?.status.history ?? [];
    assert.equal(h.length, HISTORY_LIMIT);
    assert.deepEqual(
      h.map((e) => e.term),
      Array.from({ length: HISTORY_LIMIT }, (_, i) => i + 6),
    );
  });

  it('the CRD bounds status.history at the same limit (maxItems)', () => {
    const crd = loadYaml<{
      spec: {
        versions: Array<{
          schema: { openAPIV3Schema: { properties: { status: { properties: { history: { maxItems: number } } } } } };
        }>;
      };
    }>(readFileSync(fileURLToPath(new URL('../../crds/siphapair.yaml', import.meta.url)), 'utf8'));
    assert.equal(crd.spec.versions[0]?.schema.openAPIV3Schema.properties.status.properties.history.maxItems, HISTORY_LIMIT);
  });

  it('a status written before history existed gets no made-up entry for its current master', () => {
    const old: SipHaPairStatus = { phase: 'Replicating', master: 'p-0', backup: 'p-1', term: 4, failoverCount: 3 };
    const r = nextStatus(
      pair(old),
      observe([pod('p-0', { role: 'master', term: 4 }), pod('p-1', { role: 'backup', term: 4 })]),
      at(0),
      vip,
    );
    assert.deepEqual(r.status.history ?? [], []);
    assert.equal(r.status.failoverCount, 3);
  });
});
