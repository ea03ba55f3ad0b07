/**
 * The operator-driven rolling upgrade (operator/src/upgrade.ts) as pure
 * decisions: backup first, one planned switchover, then the old master;
 * never the master, never while the pair is unsettled.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PodView } from '../../operator/src/status.ts';
import { upgradePlan } from '../../operator/src/upgrade.ts';
import { podView } from './fixtures/pod-view.ts';

const pod = (ordinal: number, role: PodView['role'], revision: string, more: Partial<PodView> = {}): PodView =>
  podView(ordinal, role, { revision, ...more });

describe('operator: rolling upgrade of a pair', () => {
  it('does nothing while every pod is at the update revision', () => {
    assert.equal(upgradePlan([pod(0, 'master', 'new'), pod(1, 'backup', 'new')], 'new', false).kind, 'idle');
    assert.equal(upgradePlan([pod(0, 'master', 'old'), pod(1, 'backup', 'old')], undefined, false).kind, 'idle');
  });

  it('the whole sequence: backup first, a switchover to it once it is back in sync, then the old master', () => {
    // Either ordinal may be master: the backup goes first.
    for (const [m, b] of [
      [0, 1],
      [1, 0],
    ] as const) {
      const step1 = upgradePlan([pod(m, 'master', 'old'), pod(b, 'backup', 'old')], 'new', false);
      assert.deepEqual(step1.kind === 'delete' && step1.pod, `p-${b}`);
      const back = upgradePlan([pod(m, 'master', 'old'), pod(b, 'backup', 'new', { inSync: false })], 'new', false);
      assert.equal(back.kind, 'wait', 'the new backup is not in sync yet');
      const step2 = upgradePlan([pod(m, 'master', 'old'), pod(b, 'backup', 'new')], 'new', false);
      assert.deepEqual(step2.kind === 'switchover' && step2.to, b);
      assert.equal(upgradePlan([pod(m, 'master', 'old'), pod(b, 'backup', 'new')], 'new', true).kind, 'wait');
      const step3 = upgradePlan([pod(m, 'backup', 'old'), pod(b, 'master', 'new')], 'new', false);
      assert.deepEqual(step3.kind === 'delete' && step3.pod, `p-${m}`);
      assert.equal(upgradePlan([pod(m, 'backup', 'new'), pod(b, 'master', 'new')], 'new', false).kind, 'idle');
    }
  });

  it('never deletes a master, and waits while the pair is not one master and one backup', () => {
    const unsettled: PodView[][] = [
      [pod(0, 'master', 'old')],
      [pod(0, 'master', 'old'), pod(1, 'starting', 'new')],
      [pod(0, 'resigned', 'old'), pod(1, 'master', 'new')],
      [pod(0, 'master', 'old'), pod(1, 'master', 'old')],
      [pod(0, undefined, 'old'), pod(1, 'backup', 'old')],
    ];
    for (const pods of unsettled) assert.equal(upgradePlan(pods, 'new', false).kind, 'wait', JSON.stringify(pods));
    for (const m of ['old', 'new'])
      for (const b of ['old', 'new'])
        for (const inSync of [true, false]) {
          const p = upgradePlan([pod(0, 'master', m), pod(1, 'backup', b, { inSync })], 'new', false);
          assert.ok(!(p.kind === 'delete' && p.pod === 'p-0'), `never the master (${m}/${b}/${inSync})`);
        }
  });
});
