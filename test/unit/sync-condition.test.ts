/**
 * "The backup is out of sync" reaches `kubectl describe shp` (issue 8 item 3):
 * the sidecars say it on their pods (sipha.io/in-sync), the operator turns it
 * into the Replicating condition and an Event each way. Pure status rules.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import type { SipHaPairStatus } from '../../contract/siphapair.ts';
import { nextStatus, observe } from '../../operator/src/status.ts';
import { pairWithStatus } from '../lib/siphapair-fixture.ts';

const pod = (name: string, role: string, term: number, inSync?: boolean): V1Pod => ({
  metadata: {
    name,
    labels: { 'sipha.io/role': role },
    annotations: { 'sipha.io/term': String(term), ...(inSync !== undefined ? { 'sipha.io/in-sync': String(inSync) } : {}) },
  },
});
const pair = pairWithStatus;
const vip = { ok: true, reason: 'Held', message: 'held' };
const now = new Date('2026-11-29T12:00:00Z');
const replicating = (s: SipHaPairStatus) => s.conditions?.find((c) => c.type === 'Replicating');

describe('operator: the Replicating condition follows what the sidecars say of sync', () => {
  it('in sync: True; a master that says its backup is out of sync: False with the reason, and a Warning Event', () => {
    const synced = nextStatus(pair(), observe([pod('p-0', 'master', 2, true), pod('p-1', 'backup', 2, true)]), now, vip);
    assert.equal(replicating(synced.status)?.status, 'True');
    assert.equal(replicating(synced.status)?.reason, 'BackupInSync');

    const stalled = nextStatus(
      pair(synced.status),
      observe([pod('p-0', 'master', 2, false), pod('p-1', 'backup', 2, true)]),
      now,
      vip,
    );
    assert.equal(replicating(stalled.status)?.status, 'False');
    assert.equal(replicating(stalled.status)?.reason, 'BackupOutOfSync');
    assert.match(replicating(stalled.status)?.message ?? '', /p-1 is backup but not in sync with p-0 \(p-0 says so\)/);
    assert.deepEqual(
      stalled.transitions.map((t) => [t.reason, t.type]),
      [['BackupOutOfSync', 'Warning']],
    );

    const back = nextStatus(
      pair(stalled.status),
      observe([pod('p-0', 'master', 2, true), pod('p-1', 'backup', 2, true)]),
      now,
      vip,
    );
    assert.equal(replicating(back.status)?.status, 'True');
    assert.deepEqual(
      back.transitions.map((t) => [t.reason, t.type]),
      [['BackupInSync', 'Normal']],
    );
  });

  it('a backup still taking the state burst is out of sync; a sidecar that says nothing is taken at its role', () => {
    const joining = nextStatus(pair(), observe([pod('p-0', 'master', 2, true), pod('p-1', 'backup', 2, false)]), now, vip);
    assert.equal(replicating(joining.status)?.reason, 'BackupOutOfSync');
    const silent = nextStatus(pair(), observe([pod('p-0', 'master', 2), pod('p-1', 'backup', 2)]), now, vip);
    assert.equal(replicating(silent.status)?.status, 'True');
  });
});
