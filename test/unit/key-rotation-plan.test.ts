/** The operator's key rotation steps (operator/src/key-rotation.ts, decision 0012). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { witnessKey } from '../../contract/witness-wire.ts';
import { keyRotationPlan, rotationPatch, secretKeys } from '../../operator/src/key-rotation.ts';
import { podView } from './fixtures/pod-view.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const DONE = 'sipha.io/rotated-for';
const secret = (keys: Record<string, string>, done?: string) => secretKeys(keys, done ? { [DONE]: done } : {}, DONE);
const pods = (k0: number[] | undefined, k1: number[] | undefined) => [
  podView(0, 'master', { keys: k0 }),
  podView(1, 'backup', { keys: k1 }),
];

describe('operator: key rotation plan', () => {
  it('reads the Secret: key ids, the signing id, a Secret from before ids (hmac-key) is key 1', () => {
    assert.deepEqual(secret({ 'key-1': 'x', 'key-2': 'y', 'sign-id': b64('2\n') }), {
      ids: [1, 2],
      signId: 2,
      doneFor: undefined,
    });
    assert.deepEqual(secret({ 'hmac-key': 'x', 'link-token': 't' }), { ids: [1], signId: 1, doneFor: undefined });
    assert.deepEqual(secret({ 'key-3': 'x' }, 'r1'), { ids: [3], signId: 3, doneFor: 'r1' });
  });

  it('idle without a request, or with the one already done', () => {
    assert.equal(keyRotationPlan(undefined, secret({ 'key-1': 'x' }), pods([1], [1])).kind, 'idle');
    assert.equal(keyRotationPlan('r1', secret({ 'key-2': 'x' }, 'r1'), pods([2], [2])).kind, 'idle');
  });

  it('walks the three steps, each only once every speaking sidecar holds what the last one wrote', () => {
    const add = keyRotationPlan('r1', secret({ 'key-1': 'x' }), pods([1], [1]));
    assert.ok(add.kind === 'patch' && add.step === 'add' && add.id === 2, JSON.stringify(add));
    const mid = secret({ 'key-1': 'x', 'key-2': 'y', 'sign-id': b64('1') });
    const w1 = keyRotationPlan('r1', mid, pods([1, 2], [1]));
    assert.ok(w1.kind === 'wait' && /p-1 \(1\)/.test(w1.why), JSON.stringify(w1));
    assert.equal(
      keyRotationPlan('r1', mid, pods([1, 2], undefined)).kind,
      'wait',
      'a sidecar that says nothing of its keys is waited for',
    );
    const sign = keyRotationPlan('r1', mid, pods([1, 2], [1, 2]));
    assert.ok(sign.kind === 'patch' && sign.step === 'sign' && sign.id === 2, JSON.stringify(sign));
    const signed = secret({ 'key-1': 'x', 'key-2': 'y', 'sign-id': b64('2') });
    assert.equal(keyRotationPlan('r1', signed, pods([2, 1], [1, 2])).kind, 'wait', 'p-1 still signs with 1');
    const remove = keyRotationPlan('r1', signed, pods([2, 1], [2, 1]));
    assert.ok(
      remove.kind === 'patch' && remove.step === 'remove' && remove.id === 1 && remove.doneFor === 'r1',
      JSON.stringify(remove),
    );
    assert.equal(keyRotationPlan('r1', secret({ 'key-2': 'y', 'sign-id': b64('2') }, 'r1'), pods([2, 1], [2])).kind, 'idle');
  });

  it('a pod that has not spoken yet is not waited for (it mounts the Secret as it is)', () => {
    const mid = secret({ 'key-1': 'x', 'key-2': 'y', 'sign-id': b64('1') });
    const plan = keyRotationPlan('r1', mid, [podView(0, 'master', { keys: [1, 2] }), podView(1, undefined)]);
    assert.equal(plan.kind, 'patch');
  });

  it('a Secret it cannot make sense of is broken, never patched', () => {
    assert.equal(keyRotationPlan('r1', secret({}), pods([1], [1])).kind, 'broken');
    assert.equal(keyRotationPlan('r1', secret({ 'key-1': 'x', 'sign-id': b64('4') }), pods([1], [1])).kind, 'broken');
    assert.equal(
      keyRotationPlan('r1', secret({ 'key-1': 'x', 'key-2': 'y', 'key-3': 'z', 'sign-id': b64('1') }), pods([1], [1])).kind,
      'broken',
    );
  });
});

describe('operator: the Secret patch of each rotation step', () => {
  const fresh = Buffer.alloc(32, 9);
  const text = (b: Buffer) => b64(b.toString('base64'));
  const step = (s: 'add' | 'sign' | 'remove', id: number, doneFor?: string) =>
    ({ kind: 'patch', step: s, id, event: { reason: 'r', message: 'm' }, ...(doneFor ? { doneFor } : {}) }) as const;

  it('add: the new key beside the signing one; a Secret from before key ids gets its witness-key pinned', () => {
    const k1 = Buffer.alloc(32, 1);
    assert.deepEqual(rotationPatch(step('add', 2), { 'key-1': text(k1), 'witness-key': 'w' }, 'r1', fresh), {
      data: { 'key-2': text(fresh), 'sign-id': b64('1') },
    });
    assert.deepEqual(rotationPatch(step('add', 2), { 'hmac-key': text(k1) }, 'r1', fresh), {
      data: { 'key-2': text(fresh), 'sign-id': b64('1'), 'witness-key': text(witnessKey(k1)) },
    });
  });

  it('sign, then remove (hmac-key too when key 1 goes), recording the request', () => {
    assert.deepEqual(rotationPatch(step('sign', 2), {}, 'r1', fresh), { data: { 'sign-id': b64('2') } });
    assert.deepEqual(rotationPatch(step('remove', 1, 'r1'), {}, 'r2', fresh), {
      data: { 'key-1': null, 'hmac-key': null },
      metadata: { annotations: { [DONE]: 'r1' } },
    });
    assert.deepEqual(rotationPatch(step('remove', 2), {}, 'r2', fresh), {
      data: { 'key-2': null },
      metadata: { annotations: { [DONE]: 'r2' } },
    });
  });
});
