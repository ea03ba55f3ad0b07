import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { SIDECAR_NODE_FLAGS } from '../lib/sidecar.ts';

describe('sidecar image', () => {
  it('runs node with the flags the tests and benchmarks measured (sidecar/node-flags.json)', () => {
    const dockerfile = readFileSync(new URL('../../sidecar/Dockerfile', import.meta.url), 'utf8');
    const entry = /^ENTRYPOINT (.+)$/m.exec(dockerfile)?.[1];
    assert.ok(entry, 'an ENTRYPOINT line');
    assert.deepEqual(JSON.parse(entry), ['node', ...SIDECAR_NODE_FLAGS, 'sidecar/src/main.ts']);
  });
});
