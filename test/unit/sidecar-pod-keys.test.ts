/**
 * What the sidecar writes on its pod, what the contract says it may write, and
 * what the chart's admission policy lets through are one list: a key added to
 * the sidecar's patch and not to the policy would be refused on a real cluster
 * (the role label never lands, the VIP Service never follows the master).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SIDECAR_POD_ANNOTATIONS, SIDECAR_POD_LABELS, sidecarServiceAccount } from '../../contract/names.ts';
import { names } from '../../operator/src/desired.ts';
import { rolePatch } from '../../sidecar/src/kube/role-reporter.ts';

const POLICY = readFileSync(fileURLToPath(new URL('../../charts/sipha/templates/sidecar-policy.yaml', import.meta.url)), 'utf8');

/** The CEL list literal a policy variable is set to, e.g. sidecarLabels: "['sipha.io/role']". */
function policyList(variable: string): string[] {
  const m = new RegExp(`- name: ${variable}\\n\\s+expression: (?:>-\\n\\s+)?"?\\[([^\\]]*)\\]`).exec(POLICY);
  assert.ok(m, `variable ${variable} not found in the policy`);
  return [...(m[1] as string).matchAll(/'([^']+)'/g)].map((x) => x[1] as string);
}

describe('the keys a sidecar may write on its own pod', () => {
  it('the policy allows exactly the contract’s labels and annotations', () => {
    assert.deepEqual(policyList('sidecarLabels').sort(), [...SIDECAR_POD_LABELS].sort());
    assert.deepEqual(policyList('sidecarAnnotations').sort(), [...SIDECAR_POD_ANNOTATIONS].sort());
  });

  it('every report the sidecar makes stays within them', () => {
    const full = rolePatch(
      {
        role: 'master',
        term: 7,
        reason: 'elected',
        gapMs: 12,
        since: '2026-01-01T00:00:00Z',
        inSync: true,
        handoverRefused: '7 lag',
        registrations: 1000,
      },
      new Date(),
    );
    for (const k of Object.keys(full.metadata.labels)) assert.ok((SIDECAR_POD_LABELS as readonly string[]).includes(k), k);
    for (const k of Object.keys(full.metadata.annotations))
      assert.ok((SIDECAR_POD_ANNOTATIONS as readonly string[]).includes(k), k);
  });

  it('the policy knows a sidecar by the name the operator gives its ServiceAccount', () => {
    assert.equal(names('p').serviceAccount, sidecarServiceAccount('p'));
    assert.match(POLICY, /oldObject\.metadata\.labels\['sipha\.io\/pair'\] \+ '-sidecar'/);
    assert.equal(sidecarServiceAccount('p'), 'p-sidecar');
  });
});
