/**
 * spec.tls in the pair's pods (issue 11 item 1): the Secrets as whole-directory
 * volumes (no subPath, so the kubelet updates the files in place and a renewed
 * certificate reloads without a restart), the sidecar's SIPHA_TLS_* as
 * contract/tls-settings.ts names them, the sip-tls port on the container and
 * on the LoadBalancer Service, SIPHA_TLS_PORT for the SIP server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { TLS_MOUNT_DIR, TLS_OUTBOUND_CA_FILE, TLS_SNI_ENV, tlsSniMountDir } from '../../contract/tls-settings.ts';
import { appliedObjects, statefulSet, vipService } from '../../operator/src/desired.ts';
import { testPair } from '../lib/siphapair-fixture.ts';

const pair = testPair;

type Env = { name: string; value?: string };
type Mount = { name: string; mountPath: string; readOnly?: boolean; subPath?: string };
type Container = {
  name: string;
  env: Env[];
  ports?: Array<{ name: string; containerPort: number; protocol: string }>;
  volumeMounts?: Mount[];
};
// biome-ignore lint/suspicious/noExplicitAny: reading into the generated manifest
type Any = any;
const podSpec = (p: SipHaPair) => (statefulSet(p) as Any).spec.template.spec;
const container = (p: SipHaPair, name: string) =>
  (podSpec(p).containers as Container[]).find((c) => c.name === name) as Container;
const envOf = (c: Container) => Object.fromEntries(c.env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
const volume = (p: SipHaPair, name: string) =>
  (podSpec(p).volumes as Array<{ name: string }>).find((v) => v.name === name) as Any;

describe('spec.tls in the pod', () => {
  it('without spec.tls: no TLS volume, mount, environment or port', () => {
    const p = pair();
    const side = container(p, 'sipha-sidecar');
    assert.equal(JSON.stringify(podSpec(p)).includes('TLS'), false);
    assert.equal(JSON.stringify(podSpec(p)).includes('tls'), false);
    assert.equal(
      side.ports?.some((x) => x.name === 'sip-tls'),
      false,
    );
  });

  it('mounts the Secret whole, read-only, at TLS_MOUNT_DIR in the sidecar only, and never by subPath', () => {
    const p = pair({ tls: { secretName: 'edge-tls' } });
    assert.deepEqual(volume(p, 'sipha-tls'), { name: 'sipha-tls', secret: { secretName: 'edge-tls', defaultMode: 0o400 } });
    const mounts = container(p, 'sipha-sidecar').volumeMounts ?? [];
    assert.deepEqual(
      mounts.find((m) => m.name === 'sipha-tls'),
      { name: 'sipha-tls', mountPath: TLS_MOUNT_DIR, readOnly: true },
    );
    for (const c of podSpec(p).containers as Container[])
      for (const m of c.volumeMounts ?? []) assert.equal(m.subPath, undefined, `${c.name} mounts ${m.name} by subPath`);
    assert.equal(
      (container(p, 'sip-server').volumeMounts ?? []).some((m) => m.name.startsWith('sipha-tls')),
      false,
      'the SIP server holds no private key',
    );
  });

  it('sets the contract’s environment on the sidecar (defaults: port 5061, clientAuth none) and SIPHA_TLS_PORT on the server', () => {
    const p = pair({ tls: { secretName: 'edge-tls' } });
    const env = envOf(container(p, 'sipha-sidecar'));
    assert.equal(env.SIPHA_TLS_DIR, TLS_MOUNT_DIR);
    assert.equal(env.SIPHA_TLS_PORT, '5061');
    assert.equal(env.SIPHA_TLS_CLIENT_AUTH, 'none');
    assert.equal(env.SIPHA_TLS_SNI, undefined);
    assert.equal(env.SIPHA_TLS_OUTBOUND_CA, undefined);
    assert.equal(envOf(container(p, 'sip-server')).SIPHA_TLS_PORT, '5061');
    assert.equal(envOf(container(p, 'sip-server')).SIPHA_TLS_DIR, undefined);
  });

  it('maps clientAuth Optional / Require to optional / require, and the port as given', () => {
    for (const [mode, word] of [
      ['Optional', 'optional'],
      ['Require', 'require'],
    ] as const) {
      const env = envOf(container(pair({ tls: { secretName: 't', port: 5091, clientAuth: mode } }), 'sipha-sidecar'));
      assert.equal(env.SIPHA_TLS_CLIENT_AUTH, word);
      assert.equal(env.SIPHA_TLS_PORT, '5091');
    }
  });

  it('adds the sip-tls TCP port to the sidecar container', () => {
    const ports = container(pair({ tls: { secretName: 't', port: 5091 } }), 'sipha-sidecar').ports ?? [];
    assert.deepEqual(
      ports.find((x) => x.name === 'sip-tls'),
      { name: 'sip-tls', containerPort: 5091, protocol: 'TCP' },
    );
  });

  it('mounts each SNI Secret at tlsSniMountDir(n) and names them in SIPHA_TLS_SNI, in order', () => {
    const p = pair({
      tls: {
        secretName: 't',
        sni: [
          { serverName: 'sip.example.com', secretName: 'a-tls' },
          { serverName: '*.trunks.example.net', secretName: 'b-tls' },
        ],
      },
    });
    const side = container(p, 'sipha-sidecar');
    assert.equal(envOf(side)[TLS_SNI_ENV], `sip.example.com=${tlsSniMountDir(0)},*.trunks.example.net=${tlsSniMountDir(1)}`);
    assert.deepEqual(volume(p, 'sipha-tls-sni-1'), {
      name: 'sipha-tls-sni-1',
      secret: { secretName: 'b-tls', defaultMode: 0o400 },
    });
    assert.deepEqual(
      side.volumeMounts?.find((m) => m.name === 'sipha-tls-sni-0'),
      { name: 'sipha-tls-sni-0', mountPath: tlsSniMountDir(0), readOnly: true },
    );
  });

  it('mounts the outbound CA bundle’s ca.crt (a ConfigMap or a Secret) as the directory of TLS_OUTBOUND_CA_FILE', () => {
    for (const kind of ['ConfigMap', 'Secret'] as const) {
      const p = pair({ tls: { secretName: 't', outboundCA: { kind, name: 'peers-ca' } } });
      const side = container(p, 'sipha-sidecar');
      assert.equal(envOf(side).SIPHA_TLS_OUTBOUND_CA, TLS_OUTBOUND_CA_FILE);
      const mount = side.volumeMounts?.find((m) => m.name === 'sipha-tls-outbound-ca');
      assert.equal(`${mount?.mountPath}/ca.crt`, TLS_OUTBOUND_CA_FILE);
      assert.equal(mount?.readOnly, true);
      const items = [{ key: 'ca.crt', path: 'ca.crt' }];
      assert.deepEqual(volume(p, 'sipha-tls-outbound-ca').projected.sources, [
        kind === 'Secret' ? { secret: { name: 'peers-ca', items } } : { configMap: { name: 'peers-ca', items } },
      ]);
    }
  });

  it('with clientCA: one directory of the Secret’s certificate and key and the bundle’s ca.crt (projected, still no subPath)', () => {
    const p = pair({ tls: { secretName: 't', clientAuth: 'Require', clientCA: { kind: 'ConfigMap', name: 'trunk-ca' } } });
    assert.deepEqual(volume(p, 'sipha-tls').projected.sources, [
      {
        secret: {
          name: 't',
          items: [
            { key: 'tls.crt', path: 'tls.crt' },
            { key: 'tls.key', path: 'tls.key' },
          ],
        },
      },
      { configMap: { name: 'trunk-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
    ]);
  });

  it('the LoadBalancer Service (metallb, kube-vip) carries sip-tls to the same port', () => {
    for (const mode of ['metallb', 'kube-vip'] as const) {
      const svc = vipService(pair({ vip: { address: '198.18.0.100', mode }, tls: { secretName: 't', port: 5091 } })) as Any;
      assert.deepEqual(
        svc.spec.ports.find((x: { name: string }) => x.name === 'sip-tls'),
        { name: 'sip-tls', port: 5091, targetPort: 5091, protocol: 'TCP' },
      );
    }
    const plain = vipService(pair({ vip: { address: '198.18.0.100', mode: 'metallb' } })) as Any;
    assert.equal(plain.spec.ports.length, 2);
  });

  it('the pod template is a function of the spec alone: a change of spec.tls changes it (a roll), nothing else about TLS does', () => {
    const a = JSON.stringify(statefulSet(pair({ tls: { secretName: 't' } })));
    assert.equal(a, JSON.stringify(statefulSet(pair({ tls: { secretName: 't' } }))));
    assert.notEqual(a, JSON.stringify(statefulSet(pair({ tls: { secretName: 't', clientAuth: 'Optional' } }))));
    assert.notEqual(a, JSON.stringify(statefulSet(pair({ tls: { secretName: 't', port: 5071 } }))));
    assert.notEqual(a, JSON.stringify(statefulSet(pair())));
  });

  it('holdTls leaves out the StatefulSet and the VIP Service, and nothing else', () => {
    const p = pair({ vip: { address: '198.18.0.100', mode: 'metallb' }, tls: { secretName: 't' } });
    const kinds = (objs: Any[]) => objs.map((o) => `${o.kind}/${o.metadata.name}`);
    const all = kinds(appliedObjects(p));
    const held = kinds(appliedObjects(p, { holdTls: true }));
    assert.deepEqual(
      all.filter((k) => !held.includes(k)),
      ['Service/p-vip', 'StatefulSet/p'],
    );
  });
});
