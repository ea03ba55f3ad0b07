/** The key files a sidecar reads (sidecar/src/ha/keyring.ts, decision 0012). */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { secretKeys } from '../../operator/src/key-rotation.ts';
import { KeyDirWatch, keyIds, readKeyDir } from '../../sidecar/src/ha/keyring.ts';
import { createLogger } from '../../sidecar/src/log.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const b64 = () => randomBytes(32).toString('base64');
function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'sipha-keys-'));
  dirs.push(d);
  for (const [n, t] of Object.entries(files)) writeFileSync(join(d, n), t);
  return d;
}

describe('key files', () => {
  it('one key needs no sign-id; every key-<id> is accepted; the signing key comes first', () => {
    const [k1, k2] = [b64(), b64()];
    const one = readKeyDir(dir({ 'key-1': k1, 'link-token': 'not-a-key' }));
    assert.equal(keyIds(one), '1');
    assert.equal(one.sign.toString('base64'), k1);
    const two = readKeyDir(dir({ 'key-1': k1, 'key-2': `${k2}\n`, 'sign-id': '2\n' }));
    assert.equal(keyIds(two), '2,1');
    assert.equal(two.sign.toString('base64'), k2);
  });

  it('a Secret from before key ids (hmac-key) is key 1', () => {
    const k = b64();
    const r = readKeyDir(dir({ 'hmac-key': k }));
    assert.equal(keyIds(r), '1');
    assert.equal(r.sign.toString('base64'), k);
  });

  it('says what is wrong: no key, two keys and no sign-id, a sign-id without its key, a short key', () => {
    assert.throws(() => readKeyDir(dir({})), /no key-<id> entry/);
    assert.throws(() => readKeyDir(dir({ 'key-1': b64(), 'key-2': b64() })), /sign-id is missing/);
    assert.throws(() => readKeyDir(dir({ 'key-1': b64(), 'sign-id': '3' })), /sign-id=3 names no key beside it/);
    assert.throws(() => readKeyDir(dir({ 'key-1': 'c2hvcnQ=' })), /at least 16 bytes/);
  });

  it('the watch reports a change once, and keeps the keys in use while the files are bad', () => {
    const [k1, k2] = [b64(), b64()];
    const d = dir({ 'key-1': k1 });
    const seen: string[] = [];
    const w = new KeyDirWatch(d, readKeyDir(d), (k) => seen.push(keyIds(k)), createLogger('silent', 't'));
    w.check();
    assert.deepEqual(seen, [], 'nothing changed');
    writeFileSync(join(d, 'key-2'), k2);
    w.check(); // two keys, no sign-id: unreadable, keep key 1
    assert.deepEqual(seen, []);
    writeFileSync(join(d, 'sign-id'), '1');
    w.check();
    w.check();
    assert.deepEqual(seen, ['1,2']);
  });
});

describe('one layout for both readers (contract/key-files.ts)', () => {
  it('the sidecar (files) and the operator (Secret data) find the same keys and signer, and refuse the same Secrets', () => {
    const layouts: Array<Record<string, string>> = [
      { 'key-1': b64() },
      { 'hmac-key': b64(), 'link-token': 't' },
      { 'hmac-key': b64(), 'key-2': b64(), 'sign-id': '1' },
      { 'key-1': b64(), 'hmac-key': b64() },
      { 'key-2': b64(), 'key-3': b64(), 'sign-id': '3\n', 'witness-key': b64() },
      {},
      { 'key-1': b64(), 'key-2': b64() },
      { 'key-1': b64(), 'sign-id': '2' },
      { 'key-1': b64(), 'key-2': b64(), 'key-3': b64(), 'sign-id': '1' },
      { 'key-1': b64(), 'sign-id': 'one' },
    ];
    for (const files of layouts) {
      const data = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
      const op = secretKeys(data, {}, 'done');
      let side: { ids: number[]; signId: number } | null = null;
      try {
        const k = readKeyDir(dir(files));
        side = { ids: [k.signId, ...k.others.map((o) => o.id)].sort((a, b) => a - b), signId: k.signId };
      } catch {
        side = null;
      }
      const what = JSON.stringify(Object.keys(files));
      if (side === null) assert.ok(op.broken, `${what}: the sidecar refuses it, the operator must too`);
      else assert.deepEqual({ ids: op.ids, signId: op.signId, broken: op.broken }, { ...side, broken: undefined }, what);
    }
  });
});
