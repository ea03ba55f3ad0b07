/**
 * The operator's part of a planned switchover (kubectl annotate shp NAME
 * sipha.io/switchover=<ordinal>), as pure decisions: ask the master, finish,
 * or refuse with a reason the user reads in the Events.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PodView } from '../../operator/src/status.ts';
import { switchoverPlan } from '../../operator/src/switchover.ts';
import { podView } from './fixtures/pod-view.ts';

const pod = (ordinal: number, role: PodView['role'], term: number, more: Partial<PodView> = {}): PodView =>
  podView(ordinal, role, { term, ...more });

describe('operator: a switchover request', () => {
  it('asks the master to hand over at its term, once (one Event)', () => {
    const first = switchoverPlan('p', '1', [pod(0, 'master', 2), pod(1, 'backup', 2)]);
    assert.deepEqual(first.kind === 'ask' && [first.pod, first.term, first.event?.reason], ['p-0', 2, 'SwitchoverRequested']);
    const again = switchoverPlan('p', '1', [pod(0, 'master', 2, { handoverTerm: 2 }), pod(1, 'backup', 2)]);
    assert.deepEqual(again.kind === 'ask' && again.event, null);
  });

  it('ends when the target is master: done (clearing what was asked), or not needed', () => {
    const done = switchoverPlan('p', '1', [pod(0, 'backup', 2, { handoverTerm: 2 }), pod(1, 'master', 3)]);
    assert.deepEqual(done.kind === 'end' && [done.event?.reason, done.clearPods], ['SwitchoverDone', ['p-0']]);
    const already = switchoverPlan('p', '0', [pod(0, 'master', 2), pod(1, 'backup', 2)]);
    assert.equal(already.kind === 'end' && already.event?.reason, 'SwitchoverNotNeeded');
  });

  it('refuses, saying why: not an in-sync backup, no single master, a bad ordinal, or the sidecar refused', () => {
    const why = (requested: string, pods: PodView[]) => {
      const p = switchoverPlan('p', requested, pods);
      assert.equal(p.kind, 'end');
      return p.kind === 'end' ? `${p.event?.reason}: ${p.event?.message}` : '';
    };
    assert.match(
      why('1', [pod(0, 'master', 2), pod(1, 'backup', 2, { inSync: false })]),
      /SwitchoverRefused: p-1 is not an in-sync backup/,
    );
    assert.match(why('1', [pod(0, 'master', 2), pod(1, 'resigned', 2)]), /not an in-sync backup \(it reports resigned\)/);
    assert.match(why('1', [pod(0, 'resigned', 2), pod(1, 'backup', 2)]), /no single master/);
    assert.match(why('7', [pod(0, 'master', 2), pod(1, 'backup', 2)]), /expected the ordinal of a pod, 0 or 1/);
    assert.match(
      why('1', [pod(0, 'master', 2, { handoverTerm: 2, handoverRefused: '2 backup-not-in-sync' }), pod(1, 'backup', 2)]),
      /p-0 refused: backup-not-in-sync/,
    );
  });

  it('waits while the handover is in flight: the old master resigned, the target is not master yet', () => {
    const p = switchoverPlan('p', '1', [pod(0, 'resigned', 2, { handoverTerm: 2 }), pod(1, 'backup', 2)]);
    assert.equal(p.kind, 'idle');
  });

  it('clears a handover left on a pod when nothing is asked any more', () => {
    const p = switchoverPlan('p', undefined, [pod(0, 'master', 2, { handoverTerm: 2 }), pod(1, 'backup', 2)]);
    assert.deepEqual(p.kind === 'end' && [p.event, p.clearPods], [null, ['p-0']]);
    assert.equal(switchoverPlan('p', undefined, [pod(0, 'master', 2), pod(1, 'backup', 2)]).kind, 'idle');
  });
});
