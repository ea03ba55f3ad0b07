/**
 * spec.sidecar.clientLimits reaches the sidecar: the operator's pod spec sets
 * the sidecar's variables, and the sidecar reads them as the limits it
 * enforces (a trunk that sends more than a phone from one address needs this
 * in a cluster, where the pod's environment is the operator's to write).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { statefulSet } from '../../operator/src/desired.ts';
import { loadConfig } from '../../sidecar/src/config.ts';
import { testPair } from '../lib/siphapair-fixture.ts';

type Env = Array<{ name: string; value?: string }>;
type Manifest = { spec: { template: { spec: { containers: Array<{ name: string; env: Env }> } } } };
const sidecarEnv = (p: SipHaPair) =>
  (statefulSet(p) as unknown as Manifest).spec.template.spec.containers.find((c) => c.name === 'sipha-sidecar')?.env as Env;
const limitVars = (env: Env) => env.filter((e) => /^SIPHA_(REQUEST_|TCP_FLOW_RATE)/.test(e.name));

describe('spec.sidecar.clientLimits', () => {
  it('absent: no variable is set, so the sidecar keeps its defaults (1000 a second per address, a burst of 2000)', () => {
    assert.deepEqual(limitVars(sidecarEnv(testPair())), []);
    const c = loadConfig({});
    assert.deepEqual(c.requestRate, { rate: 1000, burst: 2000 });
    assert.equal(c.tcpLimits.flowRate, 1000);
  });

  it('set: the operator writes them, and the sidecar enforces what it wrote', () => {
    const env = sidecarEnv(
      testPair({
        sidecar: { image: 's', clientLimits: { requestRatePerAddress: 20000, requestBurstPerAddress: 50000, tcpFlowRate: 0 } },
      }),
    );
    assert.deepEqual(limitVars(env), [
      { name: 'SIPHA_REQUEST_RATE_PER_ADDRESS', value: '20000' },
      { name: 'SIPHA_REQUEST_BURST_PER_ADDRESS', value: '50000' },
      { name: 'SIPHA_TCP_FLOW_RATE', value: '0' },
    ]);
    const c = loadConfig(Object.fromEntries(limitVars(env).map((e) => [e.name, e.value])));
    assert.deepEqual(c.requestRate, { rate: 20000, burst: 50000 });
    assert.equal(c.tcpLimits.flowRate, 0);
    // Only the rate: the burst follows it (twice).
    const rateOnly = limitVars(sidecarEnv(testPair({ sidecar: { image: 's', clientLimits: { requestRatePerAddress: 300 } } })));
    assert.deepEqual(loadConfig(Object.fromEntries(rateOnly.map((e) => [e.name, e.value]))).requestRate, {
      rate: 300,
      burst: 600,
    });
  });

  it('the sidecar refuses values out of range by name', () => {
    assert.throws(() => loadConfig({ SIPHA_REQUEST_RATE_PER_ADDRESS: '-1' }), /SIPHA_REQUEST_RATE_PER_ADDRESS/);
    assert.throws(() => loadConfig({ SIPHA_REQUEST_BURST_PER_ADDRESS: '0' }), /SIPHA_REQUEST_BURST_PER_ADDRESS/);
  });
});
