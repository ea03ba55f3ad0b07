/**
 * The fence's lifecycle as pure rules: the operator lifts a fence once the
 * fenced pod stood down or outgrew it; the sidecar obeys a fence only at or
 * above its own term; the terms it seeds from are the highest recorded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { fencingVictim, liftableFences, observe } from '../../operator/src/status.ts';
import { initialState, step } from '../../sidecar/src/ha/roles.ts';
import { fenceTerm } from '../../sidecar/src/kube/fencing-watch.ts';
import { pairOf, recordedTerm } from '../../sidecar/src/kube/term-seed.ts';

const pod = (name: string, role: string | undefined, term: number, fenced?: number): V1Pod => ({
  metadata: {
    name,
    labels: role ? { 'sipha.io/role': role } : {},
    annotations: {
      'sipha.io/term': String(term),
      ...(fenced !== undefined ? { 'sipha.io/fenced-term': String(fenced) } : {}),
    },
  },
});

describe('operator: when a fence is lifted', () => {
  const lifted = (...pods: V1Pod[]) => liftableFences(observe(pods)).map((l) => `${l.pod.name}: ${l.reason}`);

  it('keeps a fence while the pod still shows the fence (the operator wrote role=fenced, the sidecar may not have seen it)', () => {
    assert.deepEqual(lifted(pod('p-0', 'fenced', 1, 1), pod('p-1', 'master', 2)), []);
  });
  it('keeps a fence while the pod still claims master at the fenced term', () => {
    assert.deepEqual(lifted(pod('p-0', 'master', 1, 1), pod('p-1', 'master', 2)), []);
  });
  for (const role of ['backup', 'starting', 'resigned']) {
    it(`lifts it once the fenced pod reports ${role}`, () => {
      assert.deepEqual(lifted(pod('p-0', role, 1, 1), pod('p-1', 'master', 2)), [`p-0: it reports ${role}`]);
    });
  }
  it('lifts it once the fenced pod reports a newer term than the fence', () => {
    assert.deepEqual(lifted(pod('p-0', 'master', 4, 1), pod('p-1', 'backup', 2)), ['p-0: it is at term 4 now']);
  });
  it('lifting never changes who claims master', () => {
    const cases = [
      [pod('p-0', 'master', 4, 1), pod('p-1', 'master', 2)],
      [pod('p-0', 'backup', 1, 1), pod('p-1', 'master', 2)],
      [pod('p-0', 'master', 3, 3), pod('p-1', 'master', 2)],
    ];
    for (const pods of cases) {
      const before = fencingVictim(observe(pods))?.name;
      const views = observe(pods);
      for (const l of liftableFences(views)) l.pod.fencedTerm = undefined;
      assert.equal(fencingVictim(views)?.name, before);
    }
  });
});

describe('sidecar: which fence applies', () => {
  const master = (term: number) => ({ ...initialState(0), role: 'master' as const, term, seenTerm: term, serverUp: true });
  it('a fence at or above its own term stops a master', () => {
    assert.equal(step(master(2), { type: 'fenced', term: 2 }).state.role, 'fenced');
    assert.equal(step(master(2), { type: 'fenced', term: 3 }).state.role, 'fenced');
  });
  it('a fence older than its own term is ignored (an old fence cannot stop a later master)', () => {
    const d = step(master(4), { type: 'fenced', term: 2 });
    assert.equal(d.state.role, 'master');
    assert.equal(d.reason, null);
  });
  it('reads the fence term from the pod, and nothing from a malformed one', () => {
    assert.equal(fenceTerm(pod('p-0', 'fenced', 1, 3)), 3);
    assert.equal(fenceTerm(pod('p-0', 'master', 1)), undefined);
    assert.equal(fenceTerm({ metadata: { annotations: { 'sipha.io/fenced-term': 'x' } } }), undefined);
  });
});

describe('sidecar: terms read back at start', () => {
  it('names both pods of the pair from its own pod name', () => {
    assert.deepEqual(pairOf('sip-edge-1'), { pair: 'sip-edge', pods: ['sip-edge-0', 'sip-edge-1'] });
    assert.throws(() => pairOf('bystander'), /expected <pair>-0 or <pair>-1/);
  });
  it('takes the highest of the term and the fence recorded on a pod, 0 when none', () => {
    assert.equal(recordedTerm(pod('p-0', 'master', 5)), 5);
    assert.equal(recordedTerm(pod('p-0', 'starting', 0, 7)), 7);
    assert.equal(recordedTerm(null), 0);
    assert.equal(recordedTerm({ metadata: { annotations: { 'sipha.io/term': 'junk' } } }), 0);
  });
});
