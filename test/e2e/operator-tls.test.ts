/**
 * spec.tls on a real kube-apiserver (issue 11 item 1, the operator's half):
 * the CRD refuses a bad TLS setting with a message that says why; a pair
 * whose Secret is missing gets TLSReady False, Ready False and an Event, and
 * no StatefulSet; creating the Secret clears it and the StatefulSet mounts
 * it; a renewed certificate changes no pod template; a setting the Secret
 * cannot serve (client certificates without a CA) leaves the template as it was.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { TLS_MOUNT_DIR } from '../../contract/tls-settings.ts';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { type Operator, startOperator } from '../lib/operator.ts';
import { until } from '../lib/procs.ts';
import { makeTestCa, type TestCa } from '../lib/tls-certs.ts';

const CRD = new URL('../../crds/siphapair.yaml', import.meta.url).pathname;
const pair = (name: string, tls: string) =>
  `apiVersion: sipha.io/v1alpha1\nkind: SipHaPair\nmetadata:\n  name: ${name}\nspec:\n  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n  tls:\n${tls}`;

type Condition = { type: string; status: string; reason: string; message: string };
type Container = {
  name: string;
  env: Array<{ name: string; value?: string }>;
  ports: Array<{ name: string; containerPort: number }>;
};

describe('spec.tls on a real kube-apiserver', { timeout: 180_000 }, () => {
  let cp: ControlPlane;
  let op: Operator;
  let ca: TestCa;
  const json = (args: string[]) => JSON.parse(cp.kubectl([...args, '-o', 'json']));
  const condition = (name: string, type: string): Condition | undefined =>
    (json(['get', 'shp', name]).status?.conditions ?? []).find((c: Condition) => c.type === type);
  const events = (name: string, reason: string) =>
    json(['get', 'events', '--field-selector', `involvedObject.name=${name},reason=${reason}`]).items as Array<{
      message: string;
    }>;

  before(async () => {
    cp = await startControlPlane({ controllerManager: false });
    ca = makeTestCa(`${cp.dir}/ca`);
    cp.kubectl(['apply', '-f', CRD]);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
    op = await startOperator(cp, { identity: 'op-tls', metricsPort: 18090, leaderElect: false });
  });
  after(async () => {
    await op?.stop();
    await cp?.stop();
  });

  const rejected: Array<[string, string, RegExp]> = [
    ['an unknown clientAuth', '    secretName: t\n    clientAuth: Bogus\n', /spec\.tls\.clientAuth: Unsupported value: "Bogus"/],
    ['port 0', '    secretName: t\n    port: 0\n', /spec\.tls\.port.*greater than or equal to 1/],
    [
      'the SIP port',
      '    secretName: t\n    port: 5060\n',
      /tls\.port must differ from ports sip, serverLink, replication and metrics/,
    ],
    ['no secretName', '    port: 5061\n', /spec\.tls\.secretName: Required value/],
    [
      'a clientCA with clientAuth None',
      '    secretName: t\n    clientCA:\n      name: ca\n',
      /tls\.clientCA applies only with clientAuth Optional or Require/,
    ],
    [
      'one SNI name twice',
      '    secretName: t\n    sni:\n    - { serverName: a.example.com, secretName: a }\n    - { serverName: a.example.com, secretName: b }\n',
      /spec\.tls\.sni\[1\]: Duplicate value/,
    ],
    [
      'more than 8 SNI certificates',
      `    secretName: t\n    sni:\n${Array.from({ length: 9 }, (_, i) => `    - { serverName: s${i}.example.com, secretName: s${i} }\n`).join('')}`,
      /spec\.tls\.sni: Too many: 9: must have at most 8 items/,
    ],
    [
      'an outbound CA of another kind',
      '    secretName: t\n    outboundCA:\n      kind: Pod\n      name: x\n',
      /Unsupported value: "Pod"/,
    ],
  ];
  for (const [what, tls, message] of rejected) {
    it(`the CRD rejects ${what}`, () => {
      const r = cp.kubectlTry(['apply', '-f', '-'], pair('bad', tls));
      assert.notEqual(r.code, 0, `accepted: ${r.out}`);
      assert.match(r.err, message);
    });
  }

  it('accepts the SipHaPair of examples/siphapair-tls.yaml', () => {
    const example = readFileSync(new URL('../../examples/siphapair-tls.yaml', import.meta.url), 'utf8');
    const doc = example.split(/^---$/m).find((d) => /^kind: SipHaPair$/m.test(d)) ?? '';
    const r = cp.kubectlTry(['apply', '--dry-run=server', '-f', '-'], doc);
    assert.equal(r.code, 0, r.err);
  });

  it('a Secret missing: TLSReady and Ready False with the reason, one Warning Event, and no StatefulSet', async () => {
    cp.kubectl(['apply', '-f', '-'], pair('edge', '    secretName: edge-tls\n'));
    await until(() => condition('edge', 'TLSReady')?.status === 'False', 15000, 'TLSReady False');
    const tls = condition('edge', 'TLSReady') as Condition;
    assert.equal(tls.reason, 'TLSSecretMissing');
    assert.match(tls.message, /Secret edge-tls not found/);
    assert.equal(condition('edge', 'Ready')?.reason, 'TLSSecretMissing');
    await until(() => events('edge', 'TLSSecretMissing').length === 1, 10000, 'a Warning Event');
    // What does not depend on TLS is there; the pods' StatefulSet is not.
    await until(() => cp.kubectlTry(['get', 'service', 'edge-peers']).code === 0, 10000, 'the peers Service');
    assert.notEqual(cp.kubectlTry(['get', 'statefulset', 'edge']).code, 0, 'no StatefulSet while the Secret is missing');
  });

  it('the Secret created: TLSReady True without a change to the pair, and the StatefulSet mounts it', async () => {
    const leaf = ca.issue('edge', ['sip.example.com']);
    cp.kubectl(['create', 'secret', 'tls', 'edge-tls', `--cert=${leaf.dir}/tls.crt`, `--key=${leaf.dir}/tls.key`]);
    // Seen by the operator's own recheck (it does not watch Secrets): within seconds.
    await until(() => condition('edge', 'TLSReady')?.status === 'True', 20000, 'TLSReady True');
    assert.equal(condition('edge', 'TLSReady')?.reason, 'TLSSecretValid');
    assert.equal(events('edge', 'TLSSecretValid').length, 1);
    await until(() => cp.kubectlTry(['get', 'statefulset', 'edge']).code === 0, 10000, 'the StatefulSet');
    const tpl = json(['get', 'statefulset', 'edge']).spec.template.spec;
    assert.deepEqual(
      tpl.volumes.find((v: { name: string }) => v.name === 'sipha-tls'),
      { name: 'sipha-tls', secret: { secretName: 'edge-tls', defaultMode: 0o400 } },
    );
    const sidecar = tpl.containers.find((c: Container) => c.name === 'sipha-sidecar');
    assert.deepEqual(
      sidecar.volumeMounts.find((m: { name: string }) => m.name === 'sipha-tls'),
      { name: 'sipha-tls', mountPath: TLS_MOUNT_DIR, readOnly: true },
    );
    const env = Object.fromEntries(sidecar.env.map((e: { name: string; value?: string }) => [e.name, e.value]));
    assert.equal(env.SIPHA_TLS_DIR, TLS_MOUNT_DIR);
    assert.equal(env.SIPHA_TLS_PORT, '5061');
    assert.equal(env.SIPHA_TLS_CLIENT_AUTH, 'none');
    assert.ok(
      sidecar.ports.some((p: { name: string; containerPort: number }) => p.name === 'sip-tls' && p.containerPort === 5061),
    );
    const server = tpl.containers.find((c: Container) => c.name === 'sip-server');
    assert.ok(server.env.some((e: { name: string; value?: string }) => e.name === 'SIPHA_TLS_PORT' && e.value === '5061'));
  });

  it('a renewed certificate changes no pod template (the files reload); a setting the Secret cannot serve changes nothing', async () => {
    const before = json(['get', 'statefulset', 'edge']);
    const renewed = ca.issue('edge-renewed', ['sip.example.com']);
    cp.kubectl(
      ['apply', '-f', '-'],
      cp.kubectl([
        'create',
        'secret',
        'tls',
        'edge-tls',
        `--cert=${renewed.dir}/tls.crt`,
        `--key=${renewed.dir}/tls.key`,
        '--dry-run=client',
        '-o',
        'yaml',
      ]),
    );
    // Client certificates asked for, and the Secret has no ca.crt: refused, told, template kept.
    cp.kubectl(['patch', 'shp', 'edge', '--type', 'merge', '-p', '{"spec":{"tls":{"clientAuth":"Require"}}}']);
    await until(() => condition('edge', 'TLSReady')?.reason === 'TLSSecretInvalid', 15000, 'TLSSecretInvalid');
    assert.match(condition('edge', 'TLSReady')?.message ?? '', /Secret edge-tls has no ca\.crt/);
    await until(() => events('edge', 'TLSSecretInvalid').length === 1, 10000, 'a Warning Event');
    const held = json(['get', 'statefulset', 'edge']);
    assert.equal(held.metadata.generation, before.metadata.generation, 'no new template: nothing rolls');
    assert.deepEqual(held.spec.template, before.spec.template);

    // Back to a setting it can serve: the condition clears; the template is the one from before.
    cp.kubectl(['patch', 'shp', 'edge', '--type', 'merge', '-p', '{"spec":{"tls":{"clientAuth":"None"}}}']);
    await until(() => condition('edge', 'TLSReady')?.status === 'True', 15000, 'TLSReady True again');
    assert.deepEqual(json(['get', 'statefulset', 'edge']).spec.template, before.spec.template);
    assert.doesNotMatch(op.output(), /reconcile failed/i, op.output().slice(-2000));
  });
});
