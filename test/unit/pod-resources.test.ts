/** The pair's containers: Guaranteed by default, the spec's resources taken as given. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { statefulSet } from '../../operator/src/desired.ts';
import { testPair } from '../lib/siphapair-fixture.ts';

const pair = testPair;

type Container = { name: string; resources: { requests?: Record<string, unknown>; limits?: Record<string, unknown> } };
// biome-ignore lint/suspicious/noExplicitAny: reading into the generated manifest
const containers = (p: SipHaPair) => (statefulSet(p) as any).spec.template.spec.containers as Container[];

describe('requests and limits of the pair’s containers', () => {
  it('by default every container has requests equal to limits for CPU and memory (Guaranteed)', () => {
    for (const c of containers(pair())) {
      assert.ok(c.resources.limits?.cpu && c.resources.limits?.memory, c.name);
      assert.deepEqual(c.resources.requests, c.resources.limits, c.name);
    }
  });

  it('takes the spec’s resources as given, per container, never mixed with the defaults', () => {
    const cs = containers(
      pair({
        sipServer: { image: 'k', resources: { limits: { cpu: '2', memory: '1Gi' } } },
        sidecar: { image: 's', resources: { requests: { cpu: '250m', memory: '300Mi' } } },
      }),
    );
    assert.deepEqual(cs.find((c) => c.name === 'sip-server')?.resources, { limits: { cpu: '2', memory: '1Gi' } });
    assert.deepEqual(cs.find((c) => c.name === 'sipha-sidecar')?.resources, { requests: { cpu: '250m', memory: '300Mi' } });
  });
});
