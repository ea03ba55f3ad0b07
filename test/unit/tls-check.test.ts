/**
 * The operator's judgement of what spec.tls names (operator/src/tls-check.ts)
 * and what it becomes in the status: the TLSReady condition, Ready False with
 * the same reason, one Warning Event when it breaks and one Normal when fixed.
 * Certificates from test/lib/tls-certs.ts (openssl, a throwaway CA).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import type { SipHaPairStatus, TlsSpec } from '../../contract/siphapair.ts';
import { nextStatus } from '../../operator/src/status.ts';
import { type TlsObjects, tlsRefs, tlsVerdict } from '../../operator/src/tls-check.ts';
import { pairWithStatus } from '../lib/siphapair-fixture.ts';
import { makeTestCa, type TlsDir } from '../lib/tls-certs.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const tlsSecret = (leaf: TlsDir, opts: { ca?: boolean; type?: string; drop?: string } = {}): V1Secret => {
  const data: Record<string, string> = { 'tls.crt': b64(leaf.cert), 'tls.key': b64(leaf.key) };
  if (opts.ca) data['ca.crt'] = b64(leaf.ca);
  if (opts.drop) delete data[opts.drop];
  return { type: opts.type ?? 'kubernetes.io/tls', data };
};
const objects = (secrets: Record<string, V1Secret | null>, configMaps: Record<string, V1ConfigMap | null> = {}): TlsObjects => ({
  secrets: new Map(Object.entries(secrets)),
  configMaps: new Map(Object.entries(configMaps)),
});

describe('spec.tls checked before the pods use it', () => {
  let dir: string;
  let leaf: TlsDir;
  let other: TlsDir;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sipha-tls-check-'));
    const ca = makeTestCa(dir);
    leaf = ca.issue('edge', ['sip.example.com']);
    other = ca.issue('other', ['other.example.com']);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const tls: TlsSpec = { secretName: 'edge-tls', port: 5061, clientAuth: 'None' };

  it('a kubernetes.io/tls Secret whose key matches its certificate: ok', () => {
    const v = tlsVerdict(tls, objects({ 'edge-tls': tlsSecret(leaf) }));
    assert.equal(v.ok, true, v.message);
    assert.equal(v.reason, 'TLSSecretValid');
    assert.match(v.message, /port 5061 with Secret edge-tls; no client certificates asked/);
  });

  const bad: Array<[string, TlsSpec, () => TlsObjects, string, RegExp]> = [
    [
      'the Secret missing',
      tls,
      () => objects({ 'edge-tls': null }),
      'TLSSecretMissing',
      /^tls\.secretName: Secret edge-tls not found/,
    ],
    [
      'a Secret that is not kubernetes.io/tls',
      tls,
      () => objects({ 'edge-tls': tlsSecret(leaf, { type: 'Opaque' }) }),
      'TLSSecretInvalid',
      /Secret edge-tls is of type Opaque, not kubernetes\.io\/tls/,
    ],
    [
      'no tls.key',
      tls,
      () => objects({ 'edge-tls': tlsSecret(leaf, { drop: 'tls.key' }) }),
      'TLSSecretInvalid',
      /Secret edge-tls has no tls\.key/,
    ],
    [
      'a tls.crt that is not a certificate',
      tls,
      () => objects({ 'edge-tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64('junk'), 'tls.key': b64(leaf.key) } } }),
      'TLSSecretInvalid',
      /tls\.crt of Secret edge-tls is not a PEM certificate/,
    ],
    [
      'a key of another certificate',
      tls,
      () =>
        objects({ 'edge-tls': { type: 'kubernetes.io/tls', data: { 'tls.crt': b64(leaf.cert), 'tls.key': b64(other.key) } } }),
      'TLSSecretInvalid',
      /tls\.key of Secret edge-tls is not the key of its tls\.crt/,
    ],
    [
      'clientAuth Require without a ca.crt',
      { ...tls, clientAuth: 'Require' },
      () => objects({ 'edge-tls': tlsSecret(leaf) }),
      'TLSSecretInvalid',
      /clientAuth Require checks client certificates against a CA: Secret edge-tls has no ca\.crt \(add one, or name a bundle in tls\.clientCA\)/,
    ],
    [
      'clientAuth Optional with a clientCA ConfigMap missing',
      { ...tls, clientAuth: 'Optional', clientCA: { kind: 'ConfigMap', name: 'trunk-ca' } },
      () => objects({ 'edge-tls': tlsSecret(leaf) }, { 'trunk-ca': null }),
      'TLSSecretMissing',
      /clientAuth Optional \(tls\.clientCA\): ConfigMap trunk-ca not found/,
    ],
    [
      'an SNI Secret missing',
      { ...tls, sni: [{ serverName: 'b.example.com', secretName: 'b-tls' }] },
      () => objects({ 'edge-tls': tlsSecret(leaf), 'b-tls': null }),
      'TLSSecretMissing',
      /tls\.sni b\.example\.com: Secret b-tls not found/,
    ],
    [
      'an outbound CA without ca.crt',
      { ...tls, outboundCA: { kind: 'ConfigMap', name: 'peers-ca' } },
      () => objects({ 'edge-tls': tlsSecret(leaf) }, { 'peers-ca': { data: { other: 'x' } } }),
      'TLSSecretInvalid',
      /tls\.outboundCA: ConfigMap peers-ca has no ca\.crt/,
    ],
  ];
  for (const [what, spec, found, reason, message] of bad) {
    it(`${what}: not ok, ${reason}, a message that names it`, () => {
      const v = tlsVerdict(spec, found());
      assert.equal(v.ok, false);
      assert.equal(v.reason, reason);
      assert.match(v.message, message);
      assert.match(v.message, /the pods are not changed until this is fixed$/);
    });
  }

  it('says every problem at once, the first one’s reason', () => {
    const v = tlsVerdict(
      { ...tls, sni: [{ serverName: 'b.example.com', secretName: 'b-tls' }] },
      objects({ 'edge-tls': tlsSecret(leaf, { type: 'Opaque' }), 'b-tls': null }),
    );
    assert.equal(v.reason, 'TLSSecretInvalid');
    assert.match(v.message, /type Opaque.*; tls\.sni b\.example\.com: Secret b-tls not found/);
  });

  it('mutual TLS with the Secret’s ca.crt, SNI and outbound CA all present: ok, and the message says so', () => {
    const spec: TlsSpec = {
      ...tls,
      clientAuth: 'Require',
      sni: [{ serverName: 'b.example.com', secretName: 'b-tls' }],
      outboundCA: { kind: 'Secret', name: 'peers-ca' },
    };
    const v = tlsVerdict(
      spec,
      objects({
        'edge-tls': tlsSecret(leaf, { ca: true }),
        'b-tls': tlsSecret(other),
        'peers-ca': { type: 'Opaque', data: { 'ca.crt': b64(leaf.ca) } },
      }),
    );
    assert.equal(v.ok, true, v.message);
    assert.match(
      v.message,
      /client certificates required; 1 more certificate by SNI; next hops verified against Secret peers-ca/,
    );
  });

  it('reads each named object once; clientCA only when client certificates are asked for', () => {
    assert.deepEqual(
      tlsRefs({
        ...tls,
        clientAuth: 'Require',
        clientCA: { kind: 'ConfigMap', name: 'ca' },
        sni: [{ serverName: 'a.example.com', secretName: 'edge-tls' }],
        outboundCA: { kind: 'ConfigMap', name: 'ca' },
      }),
      { secrets: ['edge-tls'], configMaps: ['ca'] },
    );
  });
});

describe('the TLSReady condition and Ready', () => {
  const pair = pairWithStatus;
  const vip = { ok: true, reason: 'Held', message: 'held' };
  const now = new Date('2026-11-29T12:00:00Z');
  const broken = { ok: false, reason: 'TLSSecretMissing', message: 'tls.secretName: Secret t not found' };
  const fixed = { ok: true, reason: 'TLSSecretValid', message: 'SIP over TLS on port 5061 with Secret t' };
  const cond = (s: SipHaPairStatus, type: string) => s.conditions?.find((c) => c.type === type);

  it('no spec.tls: no TLSReady condition', () => {
    assert.equal(cond(nextStatus(pair(), [], now, vip).status, 'TLSReady'), undefined);
  });

  it('broken: TLSReady False, Ready False with the same reason, one Warning; fixed: True and one Normal', () => {
    const first = nextStatus(pair(), [], now, vip, broken);
    assert.equal(cond(first.status, 'TLSReady')?.status, 'False');
    assert.equal(cond(first.status, 'Ready')?.status, 'False');
    assert.equal(cond(first.status, 'Ready')?.reason, 'TLSSecretMissing');
    assert.deepEqual(
      first.transitions.filter((t) => t.reason.startsWith('TLS')),
      [{ reason: 'TLSSecretMissing', type: 'Warning', message: broken.message }],
    );
    const again = nextStatus(pair(first.status), [], now, vip, broken);
    assert.equal(again.transitions.filter((t) => t.reason.startsWith('TLS')).length, 0, 'told once');
    const ok = nextStatus(pair(again.status), [], now, vip, fixed);
    assert.equal(cond(ok.status, 'TLSReady')?.status, 'True');
    assert.equal(cond(ok.status, 'Ready')?.reason, 'Pending', 'Ready derives from the phase again');
    assert.deepEqual(
      ok.transitions.filter((t) => t.reason.startsWith('TLS')),
      [{ reason: 'TLSSecretValid', type: 'Normal', message: fixed.message }],
    );
  });
});
