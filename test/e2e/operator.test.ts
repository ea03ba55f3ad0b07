/**
 * The operator against a real kube-apiserver + etcd + kube-controller-manager
 * (built from Go modules by hack/build-k8s.sh). No fake API server anywhere.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { witnessKey } from '../../contract/witness-wire.ts';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { type Operator, type Reporter, startOperator, startReporter } from '../lib/operator.ts';
import { until } from '../lib/procs.ts';

const CRD = fileURLToPath(new URL('../../crds/siphapair.yaml', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../examples/siphapair.yaml', import.meta.url));

const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const pair = (name: string, spec: string) =>
  `apiVersion: sipha.io/v1alpha1\nkind: SipHaPair\nmetadata:\n  name: ${name}\nspec:\n${spec}`;
const VALID = `  sipServer:\n    image: kamailio:5.6\n  vip:\n    address: 198.18.0.100\n`;

const OWNED = (name: string) => [
  ['statefulset', name],
  ['service', `${name}-peers`],
  ['secret', `${name}-replication`],
  ['serviceaccount', `${name}-sidecar`],
  ['role', `${name}-sidecar`],
  ['rolebinding', `${name}-sidecar`],
  ['poddisruptionbudget', name],
];

describe('operator on a real kube-apiserver', { timeout: 600_000 }, () => {
  let cp: ControlPlane;
  let op: Operator;
  const json = (args: string[]) => JSON.parse(cp.kubectl([...args, '-o', 'json']));
  const exists = (kind: string, name: string) => cp.kubectlTry(['get', kind, name]).code === 0;
  const status = (name: string) => json(['get', 'shp', name]).status ?? {};

  before(async () => {
    cp = await startControlPlane();
    cp.kubectl(['apply', '-f', CRD]);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
    op = await startOperator(cp, { identity: 'op-a', metricsPort: 18080 });
    await until(async () => (await op.metric('sipha_operator_leader')) === 1, 15000, 'the only operator leads');
  });

  after(async () => {
    await op?.stop();
    await cp?.stop();
  });

  describe('the CRD rejects invalid SipHaPairs with messages that say what is wrong', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['no SIP server image', `  sipServer: {}\n  vip:\n    address: 198.18.0.100\n`, /spec\.sipServer\.image: Required value/],
      [
        'a VIP that is not an IPv4 address',
        `  sipServer:\n    image: k\n  vip:\n    address: 300.1.2.3\n`,
        /spec\.vip\.address: Invalid value: "300\.1\.2\.3"/,
      ],
      [
        'an unknown VIP mode',
        `  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n    mode: bgp\n`,
        /spec\.vip\.mode: Unsupported value: "bgp"/,
      ],
      [
        'a heartbeat interval below 10 ms',
        `${VALID}  heartbeat:\n    intervalMs: 5\n`,
        /spec\.heartbeat\.intervalMs: Invalid value: 5: spec\.heartbeat\.intervalMs in body should be greater than or equal to 10/,
      ],
      ['more than 20 misses', `${VALID}  heartbeat:\n    misses: 50\n`, /spec\.heartbeat\.misses.*less than or equal to 20/],
      [
        '3 misses with a udp witness',
        `${VALID}  heartbeat:\n    misses: 3\n  witness:\n    mode: udp\n    address: 198.18.0.30:5064\n`,
        /heartbeat\.misses must be at least 4/,
      ],
      [
        'a detection time above 2 s',
        `${VALID}  heartbeat:\n    intervalMs: 1000\n    misses: 10\n`,
        /failure detection time\) must be at most 2000 ms/,
      ],
      [
        'an interface with metallb',
        `  sipServer:\n    image: k\n  vip:\n    address: 198.18.0.100\n    mode: metallb\n    interface: eth0\n`,
        /vip\.interface applies to mode arp only/,
      ],
      ['a port above 65535', `${VALID}  ports:\n    sip: 70000\n`, /spec\.ports\.sip.*less than or equal to 65535/],
      ['two ports the same', `${VALID}  ports:\n    sip: 5070\n`, /ports must all differ/],
      [
        'a preferred master other than 0 or 1',
        `${VALID}  preferredMaster: 2\n`,
        /spec\.preferredMaster.*less than or equal to 1/,
      ],
      [
        'an unknown replication mode',
        `${VALID}  replication:\n    mode: eventual\n`,
        /spec\.replication\.mode: Unsupported value: "eventual"/,
      ],
      [
        'a udp witness without an address',
        `${VALID}  witness:\n    mode: udp\n`,
        /witness\.address \(ipv4:port\) is required when witness\.mode is udp/,
      ],
      [
        'a memory limit that is not a quantity',
        `  sipServer:\n    image: k\n    resources:\n      limits:\n        memory: lots\n  vip:\n    address: 198.18.0.100\n`,
        /spec\.sipServer\.resources\.limits\.memory: Invalid value: "lots"/,
      ],
      [
        'a negative request rate per client address',
        `  sipServer:\n    image: k\n  sidecar:\n    clientLimits:\n      requestRatePerAddress: -5\n  vip:\n    address: 198.18.0.100\n`,
        /spec\.sidecar\.clientLimits\.requestRatePerAddress.*greater than or equal to 0/,
      ],
      ['an unknown witness mode', `${VALID}  witness:\n    mode: etcd\n`, /spec\.witness\.mode: Unsupported value: "etcd"/],
      [
        'a config map without a mount path',
        `  sipServer:\n    image: k\n    configMap: cfg\n  vip:\n    address: 198.18.0.100\n`,
        /configMountPath is required when sipServer\.configMap is set/,
      ],
    ];
    for (const [what, spec, message] of cases) {
      it(`rejects ${what}`, () => {
        const r = cp.kubectlTry(['apply', '-f', '-'], pair('bad', spec));
        assert.notEqual(r.code, 0, `accepted: ${r.out}`);
        assert.match(r.err, message);
      });
    }
    it('rejects a change of VIP mode on update', () => {
      cp.kubectl(['apply', '-f', '-'], pair('mode-change', VALID));
      const r = cp.kubectlTry(
        ['apply', '-f', '-'],
        pair('mode-change', VALID.replace('address: 198.18.0.100', 'address: 198.18.0.100\n    mode: metallb')),
      );
      assert.notEqual(r.code, 0);
      assert.match(r.err, /vip\.mode cannot be changed/);
      cp.kubectl(['delete', 'shp', 'mode-change', '--wait=false']);
    });
  });

  describe('reconciling examples/siphapair.yaml', () => {
    it('creates every owned object, and the controller-manager creates the two pods', async () => {
      cp.kubectl(['apply', '-f', EXAMPLE]);
      await until(() => OWNED('sip-edge').every(([k, n]) => exists(k as string, n as string)), 20000, 'owned objects exist');
      const sts = json(['get', 'statefulset', 'sip-edge']);
      assert.equal(sts.spec.replicas, 2);
      assert.equal(sts.metadata.ownerReferences[0].kind, 'SipHaPair');
      const tpl = sts.spec.template.spec;
      assert.deepEqual(
        tpl.containers.map((c: { name: string }) => c.name),
        ['sip-server', 'sipha-sidecar'],
      );
      assert.equal(tpl.hostNetwork, true, 'arp mode runs on the host network');
      // No shared PID namespace: it would show the SIP server the sidecar's environment (the replication key).
      assert.equal(tpl.shareProcessNamespace, undefined);
      assert.equal(
        tpl.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey,
        'kubernetes.io/hostname',
      );
      const role = json(['get', 'role', 'sip-edge-sidecar']);
      // Its pair's two pods by name, nothing else: no list of every pod (the chart's admission
      // policy narrows patch to its own pod: test/e2e/chart-rbac.test.ts).
      assert.deepEqual(role.rules[0], {
        apiGroups: [''],
        resources: ['pods'],
        resourceNames: ['sip-edge-0', 'sip-edge-1'],
        verbs: ['get', 'list', 'watch', 'patch'],
      });
      assert.notEqual(
        cp.kubectlTry(['auth', 'can-i', 'list', 'pods', '--as', 'system:serviceaccount:default:sip-edge-sidecar']).code,
        0,
        'no list of every pod',
      );
      // Read back at start so terms never restart: the sidecar's own pair only.
      assert.deepEqual(role.rules[1], {
        apiGroups: ['sipha.io'],
        resources: ['siphapairs'],
        resourceNames: ['sip-edge'],
        verbs: ['get'],
      });
      // The witness (decision 0005) defaults to the pair's Lease: the sidecar reads, watches and renews that one Lease only.
      const sidecarEnv = tpl.containers[1].env as Array<{ name: string; value?: string }>;
      assert.equal(sidecarEnv.find((e) => e.name === 'SIPHA_WITNESS')?.value, 'lease');
      assert.deepEqual(role.rules[2], {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: ['sip-edge-witness'],
        verbs: ['get', 'update', 'list', 'watch'],
      });
      // The sidecar's identity may do exactly that (the operator could grant it: it holds the same rights).
      const asSidecar = ['--as', 'system:serviceaccount:default:sip-edge-sidecar'];
      assert.equal(cp.kubectlTry(['auth', 'can-i', 'update', 'leases/sip-edge-witness', ...asSidecar]).code, 0);
      assert.notEqual(cp.kubectlTry(['auth', 'can-i', 'update', 'leases/other', ...asSidecar]).code, 0);
      assert.equal(cp.kubectlTry(['auth', 'can-i', 'watch', 'leases/sip-edge-witness', ...asSidecar]).code, 0);
      assert.notEqual(cp.kubectlTry(['auth', 'can-i', 'watch', 'leases', ...asSidecar]).code, 0, 'no watch on every Lease');
      await until(
        () => exists('pod', 'sip-edge-0') && exists('pod', 'sip-edge-1'),
        30000,
        'the StatefulSet controller creates the pods',
      );
      assert.equal(exists('service', 'sip-edge-vip'), false, 'no LoadBalancer Service in arp mode');
    });

    it('creates the VIP LoadBalancer Service in metallb mode, pinned to the VIP and selecting the master', async () => {
      cp.kubectl(['apply', '-f', fileURLToPath(new URL('../../examples/siphapair-metallb.yaml', import.meta.url))]);
      await until(() => exists('service', 'sip-edge-lb-vip'), 20000, 'VIP Service exists');
      const svc = json(['get', 'service', 'sip-edge-lb-vip']);
      assert.equal(svc.spec.type, 'LoadBalancer');
      assert.equal(svc.spec.externalTrafficPolicy, 'Local');
      assert.equal(svc.metadata.annotations['metallb.io/loadBalancerIPs'], '198.18.0.101');
      assert.deepEqual(svc.spec.selector, { 'sipha.io/pair': 'sip-edge-lb', 'sipha.io/role': 'master' });
      const vipCond = (s: Json) => s.conditions?.some((c: { type: string }) => c.type === 'VIPAssigned');
      const cond = (await waitStatus('sip-edge-lb', vipCond)).conditions.find((c: { type: string }) => c.type === 'VIPAssigned');
      assert.equal(cond.status, 'False');
      assert.equal(cond.reason, 'WaitingForLoadBalancer');
    });

    it('repairs an owned object deleted or edited by hand, and never rotates the replication key', async () => {
      const key = json(['get', 'secret', 'sip-edge-replication']).data['key-1'];
      // The key file the sidecar reads holds base64 text of 32 random bytes.
      assert.equal(Buffer.from(Buffer.from(key, 'base64').toString('latin1'), 'base64').length, 32);
      const uid = json(['get', 'service', 'sip-edge-peers']).metadata.uid;
      cp.kubectl(['delete', 'service', 'sip-edge-peers']);
      await until(
        () => exists('service', 'sip-edge-peers') && json(['get', 'service', 'sip-edge-peers']).metadata.uid !== uid,
        20000,
        'Service recreated',
      );
      cp.kubectl(['patch', 'pdb', 'sip-edge', '--type', 'merge', '-p', '{"spec":{"maxUnavailable":2}}']);
      await until(() => json(['get', 'pdb', 'sip-edge']).spec.maxUnavailable === 1, 20000, 'PDB edit reverted');
      cp.kubectl(['patch', 'statefulset', 'sip-edge', '--type', 'merge', '-p', '{"spec":{"replicas":5}}']);
      await until(() => json(['get', 'statefulset', 'sip-edge']).spec.replicas === 2, 20000, 'replicas reverted');
      assert.equal(json(['get', 'secret', 'sip-edge-replication']).data['key-1'], key, 'key unchanged');
    });

    it('gives both containers of each pod the same link token, from the Secret (loopback is not private under hostNetwork)', () => {
      const token = Buffer.from(json(['get', 'secret', 'sip-edge-replication']).data['link-token'], 'base64').toString();
      assert.match(token, /^[A-Za-z0-9_-]{32}$/);
      const containers = json(['get', 'statefulset', 'sip-edge']).spec.template.spec.containers as Array<{
        name: string;
        env: Array<{ name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
      }>;
      for (const c of containers) {
        const e = c.env.find((x) => x.name === 'SIPHA_LINK_TOKEN');
        assert.deepEqual(
          [e?.valueFrom?.secretKeyRef?.name, e?.valueFrom?.secretKeyRef?.key],
          ['sip-edge-replication', 'link-token'],
          c.name,
        );
      }
    });
  });

  // biome-ignore lint/suspicious/noExplicitAny: status is read as JSON from kubectl
  type Json = Record<string, any>;
  async function waitStatus(name: string, ok: (s: Json) => boolean, ms = 10000): Promise<Json> {
    let last: Json = {};
    await until(
      () => {
        last = status(name);
        return ok(last);
      },
      ms,
      `status of ${name}`,
    );
    return last;
  }

  describe('roles reported by the sidecars become status, printer columns and events', () => {
    let r0: Reporter;
    let r1: Reporter;
    before(() => {
      r0 = startReporter(cp, 'default', 'sip-edge-0');
      r1 = startReporter(cp, 'default', 'sip-edge-1');
    });
    after(async () => {
      await r0?.stop();
      await r1?.stop();
    });

    it('shows master and backup in status and in kubectl get shp', async () => {
      await r0.report('master', 1, 'elected');
      await r1.report('backup', 1, 'joined');
      const s = await waitStatus('sip-edge', (x) => x.phase === 'Replicating');
      assert.equal(s.master, 'sip-edge-0');
      assert.equal(s.backup, 'sip-edge-1');
      assert.equal(s.term, 1);
      assert.equal(s.conditions.find((c: { type: string }) => c.type === 'Ready').status, 'True');
      assert.equal(s.observedGeneration, json(['get', 'shp', 'sip-edge']).metadata.generation);
      const table = cp.kubectl(['get', 'shp', 'sip-edge']);
      const [head, row] = table.trim().split('\n');
      assert.match(head as string, /^NAME\s+MASTER\s+BACKUP\s+PHASE\s+VIP\s+TERM\s+AGE$/);
      assert.match(row as string, /^sip-edge\s+sip-edge-0\s+sip-edge-1\s+Replicating\s+198\.18\.0\.100\s+1\s+\S+$/);
      // The role label is the one the VIP Service selects.
      assert.equal(json(['get', 'pod', 'sip-edge-0']).metadata.labels['sipha.io/role'], 'master');
    });

    it('tells when the backup falls out of sync (a stalled stream, a resync): the Replicating condition and an Event each way', async () => {
      const repl = (x: { conditions?: Array<{ type: string; status: string; reason: string }> }) =>
        x.conditions?.find((c) => c.type === 'Replicating');
      // The master's sidecar says its backup stopped acking (sipha.io/in-sync=false on its pod).
      await r0.report('master', 1, 'elected out-of-sync');
      const out = await waitStatus('sip-edge', (x) => repl(x)?.reason === 'BackupOutOfSync');
      assert.equal(repl(out)?.status, 'False');
      assert.equal(json(['get', 'pod', 'sip-edge-0']).metadata.annotations['sipha.io/in-sync'], 'false');
      await r0.report('master', 1, 'elected in-sync');
      const back = await waitStatus('sip-edge', (x) => repl(x)?.reason === 'BackupInSync');
      assert.equal(repl(back)?.status, 'True');
      await until(
        () => {
          // Events of the same second may be listed in either order.
          const d = cp.kubectl(['describe', 'shp', 'sip-edge']);
          return /Warning\s+BackupOutOfSync\s/.test(d) && /Normal\s+BackupInSync\s/.test(d);
        },
        10000,
        'both Events',
      );
    });

    it('records a failover (time, reason, gap, count, history entry) and tells it in kubectl describe', async () => {
      await r1.report('master', 2, 'peer-heartbeat-lost registrations=1000', 142);
      await r0.report('resigned', 1, 'server-dead');
      const s = await waitStatus('sip-edge', (x) => x.master === 'sip-edge-1' && x.failoverCount === 1);
      assert.equal(s.term, 2);
      assert.equal(s.lastFailover.from, 'sip-edge-0');
      assert.equal(s.lastFailover.to, 'sip-edge-1');
      assert.equal(s.lastFailover.reason, 'peer-heartbeat-lost');
      assert.equal(s.lastFailover.gapMs, 142);
      assert.equal(s.phase, 'Degraded');
      assert.equal(s.backup, undefined, 'the old backup is master now: no backup left');
      await until(
        () =>
          /Failover\s+\S+\s+sipha-operator\s+sip-edge-1 took over from sip-edge-0 at term 2/.test(
            cp.kubectl(['describe', 'shp', 'sip-edge']),
          ),
        10000,
        'Failover event',
      );
      const describe = cp.kubectl(['describe', 'shp', 'sip-edge']);
      assert.match(describe, /MasterElected/);
      assert.match(describe, /Last Failover:/);
      // status.history went through the API server's structural schema: every field kept.
      const h = s.history as Array<Record<string, unknown>>;
      assert.deepEqual(
        h.map((e) => [e.from, e.to, e.term, e.reason]),
        [
          [undefined, 'sip-edge-0', 1, 'elected'],
          ['sip-edge-0', 'sip-edge-1', 2, 'peer-heartbeat-lost'],
        ],
      );
      const took = h[1] as Record<string, unknown>;
      assert.equal(took.detectToServingMs, 142);
      assert.equal(took.registrations, 1000);
      assert.equal(took.wasInSync, true);
      assert.equal(took.time, json(['get', 'pod', 'sip-edge-1']).metadata.annotations['sipha.io/role-since']);
      const story =
        'sip-edge-1 took over from sip-edge-0 at term 2 (peer-heartbeat-lost): serving 142 ms after detection, it was an in-sync backup, holding 1000 registrations';
      assert.equal(took.change, story);
      assert.match(describe, /History:/);
      assert.match(describe, new RegExp(`Change:\\s+${literal(story)}\\n`), 'the history entry in describe');
      assert.match(describe, new RegExp(`Failover\\s+\\S+\\s+sipha-operator\\s+${literal(story)}`), 'the Event');
    });

    it('keeps status.history bounded: the API server refuses more than 10 entries', () => {
      const entry = { time: '2026-11-29T12:00:00Z', term: 1, to: 'sip-edge-0', reason: 'r', change: 'm' };
      const r = cp.kubectlTry([
        'patch',
        'shp',
        'sip-edge',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({ status: { history: Array.from({ length: 11 }, () => entry) } }),
      ]);
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.err, /status\.history: Too many: 11: must have at most 10 items/);
    });

    it('fences the lower term when two pods claim master, and the fenced sidecar hears it', async () => {
      // An earlier test may have fenced pod 0 for a moment already (two reports in a row claimed
      // master): wait for a fence delivered after this report, not any.
      const fences = () => (r0.output().match(/^fenced 1$/gm) ?? []).length;
      const before = fences();
      await r0.report('master', 1, 'stale-after-partition');
      await until(() => fences() > before, 10000, 'pod 0 told it is fenced');
      const pod0 = json(['get', 'pod', 'sip-edge-0']).metadata;
      assert.equal(pod0.labels['sipha.io/role'], 'fenced');
      assert.equal(pod0.annotations['sipha.io/fenced-term'], '1');
      const s = await waitStatus('sip-edge', (x) => x.master === 'sip-edge-1' && x.phase !== 'Fencing');
      assert.equal(s.failoverCount, 1, 'fencing is not a failover');
      assert.match(
        cp.kubectl(['describe', 'shp', 'sip-edge']),
        /Fenced\s+\S+\s+sipha-operator\s+two pods claimed master: fenced sip-edge-0 \(term 1\)/,
      );
    });

    it('keeps a fence while it is needed and lifts it once the fenced pod stood down or moved to a newer term', async () => {
      const fence = (pod: string) => json(['get', 'pod', pod]).metadata.annotations?.['sipha.io/fenced-term'];
      // The fenced sidecar says so itself: still fenced, the fence stays.
      await r0.report('fenced', 1, 'fenced-by-operator');
      await r1.report('master', 2, 'peer-heartbeat-lost'); // a pod event: the operator reconciles again
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(fence('sip-edge-0'), '1');
      // It rejoins as backup: the fence has done its job.
      await r0.report('backup', 1, 'rejoined');
      await until(() => fence('sip-edge-0') === undefined, 10000, 'fence on sip-edge-0 lifted');
      await until(
        () =>
          /FenceLifted\s+\S+\s+sipha-operator\s+lifted the fence on sip-edge-0 \(term 1\): it reports backup/.test(
            cp.kubectl(['describe', 'shp', 'sip-edge']),
          ),
        10000,
        'FenceLifted event',
      );
      // A later split: sip-edge-1 (term 2) is fenced; it is then re-elected at a newer term,
      // so its fence goes and the now-lower sip-edge-0 is fenced; its sidecar hears the new fence.
      await r0.report('master', 4, 'peer-heartbeat-lost');
      await until(() => /^fenced 2$/m.test(r1.output()), 10000, 'pod 1 told it is fenced at 2');
      await r1.report('master', 5, 'peer-heartbeat-lost');
      await until(() => fence('sip-edge-1') === undefined, 10000, 'fence on sip-edge-1 lifted (newer term)');
      await until(() => /^fenced 4$/m.test(r0.output()), 10000, 'pod 0 told it is fenced at 4');
      assert.equal(fence('sip-edge-0'), '4');
      const s = await waitStatus('sip-edge', (x) => x.master === 'sip-edge-1' && x.phase !== 'Fencing');
      assert.equal(s.term, 5);
    });
  });

  describe('leader election', () => {
    it('lets only the leader write, and a standby takes over when the leader is killed', async () => {
      const standby = await startOperator(cp, { identity: 'op-b', metricsPort: 18081 });
      try {
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(await op.metric('sipha_operator_leader'), 1);
        assert.equal(await standby.metric('sipha_operator_leader'), 0);
        const appliesBefore = await standby.metric('sipha_operator_applies_total');
        cp.kubectl(['apply', '-f', '-'], pair('leader-a', VALID));
        await until(() => exists('statefulset', 'leader-a'), 20000, 'leader reconciles');
        assert.equal(await standby.metric('sipha_operator_applies_total'), appliesBefore, 'the standby wrote nothing');
        const lease = json(['get', 'lease', 'sipha-operator']);
        assert.equal(lease.spec.holderIdentity, 'op-a');

        await op.stop('SIGKILL');
        const killedAt = Date.now();
        await until(async () => (await standby.metric('sipha_operator_leader')) === 1, 15000, 'standby leads');
        const tookMs = Date.now() - killedAt;
        assert.ok(tookMs < 3000 + 1500, `took over in ${tookMs} ms, lease duration 3 s`);
        cp.kubectl(['apply', '-f', '-'], pair('leader-b', VALID));
        await until(() => exists('statefulset', 'leader-b'), 20000, 'new leader reconciles');
        assert.equal(json(['get', 'lease', 'sipha-operator']).spec.holderIdentity, 'op-b');
      } finally {
        op = standby; // `after` stops whoever leads now
      }
    });
  });

  describe('a planned switchover asked for on the SipHaPair (kubectl annotate shp NAME sipha.io/switchover=<ordinal>)', () => {
    let r0: Reporter;
    let r1: Reporter;
    const events = () => cp.kubectl(['describe', 'shp', 'swo']);
    const request = () => json(['get', 'shp', 'swo']).metadata.annotations?.['sipha.io/switchover'];
    before(async () => {
      cp.kubectl(['apply', '-f', '-'], pair('swo', VALID));
      await until(() => exists('pod', 'swo-0') && exists('pod', 'swo-1'), 30000, 'the pods exist');
      r0 = startReporter(cp, 'default', 'swo-0');
      r1 = startReporter(cp, 'default', 'swo-1');
      await r0.report('master', 2, 'elected in-sync');
      await r1.report('backup', 2, 'peer-is-master in-sync');
      await waitStatus('swo', (x) => x.phase === 'Replicating');
    });
    after(async () => {
      await r0?.stop();
      await r1?.stop();
    });

    it('asks the master pod to hand over at its term, and ends the request with an Event once the target is master', async () => {
      cp.kubectl(['annotate', 'shp', 'swo', 'sipha.io/switchover=1']);
      await until(() => /^handover 2$/m.test(r0.output()), 15000, 'swo-0 is asked to hand over at term 2');
      // What the sidecars then do (decision 0006): the master drains and resigns, the backup takes over.
      await r0.report('resigned', 2, 'switchover in-sync');
      await r1.report('master', 3, 'peer-resigned in-sync');
      await r0.report('backup', 2, 'rejoined in-sync');
      await until(() => request() === undefined, 15000, 'the request is removed');
      assert.equal(json(['get', 'pod', 'swo-0']).metadata.annotations['sipha.io/handover'], undefined);
      assert.equal((await waitStatus('swo', (x) => x.master === 'swo-1')).master, 'swo-1');
      await until(
        () =>
          /SwitchoverRequested\s+\S+\s+sipha-operator\s+asked swo-0 \(term 2\) to hand over to swo-1/.test(events()) &&
          /SwitchoverDone\s+\S+\s+sipha-operator\s+swo-1 is master now \(term 3\)/.test(events()),
        10000,
        'both Events',
      );
    });

    it('refuses a switchover to a backup that is not in sync, with a Warning Event, and removes the request', async () => {
      await r0.report('backup', 2, 'rejoined out-of-sync');
      await waitStatus('swo', (x) => x.conditions?.some((c: { reason: string }) => c.reason === 'BackupOutOfSync'));
      cp.kubectl(['annotate', 'shp', 'swo', 'sipha.io/switchover=0']);
      await until(() => request() === undefined, 15000, 'the request is removed');
      assert.doesNotMatch(r1.output(), /^handover/m, 'the master was never asked');
      await until(
        () => /SwitchoverRefused\s+\S+\s+sipha-operator\s+swo-0 is not an in-sync backup/.test(events()),
        10000,
        'the refusal Event',
      );
    });
  });

  describe('a rolling upgrade driven by the operator (StatefulSet OnDelete)', () => {
    let r0: Reporter;
    let r1: Reporter;
    // One read: the operator may delete the pod between an "exists" and a "get".
    const uid = (pod: string) => {
      const r = cp.kubectlTry(['get', 'pod', pod, '-o', 'jsonpath={.metadata.uid}']);
      return r.code === 0 ? r.out.trim() : '';
    };
    const image = (pod: string) =>
      json(['get', 'pod', pod]).spec.containers.find((c: { name: string }) => c.name === 'sip-server').image;
    const events = () => cp.kubectl(['describe', 'shp', 'upg']);
    before(async () => {
      cp.kubectl(['apply', '-f', '-'], pair('upg', VALID));
      await until(() => exists('pod', 'upg-0') && exists('pod', 'upg-1'), 30000, 'the pods exist');
      r0 = startReporter(cp, 'default', 'upg-0');
      r1 = startReporter(cp, 'default', 'upg-1');
      await r0.report('master', 2, 'elected in-sync');
      await r1.report('backup', 2, 'peer-is-master in-sync');
      await waitStatus('upg', (x) => x.phase === 'Replicating');
    });
    after(async () => {
      await r0?.stop();
      await r1?.stop();
    });

    it('replaces the backup first, switches over to it once it is in sync, then replaces the old master: one switchover', async () => {
      assert.equal(json(['get', 'statefulset', 'upg']).spec.updateStrategy.type, 'OnDelete', 'the operator decides when pods go');
      const [m0, b0] = [uid('upg-0'), uid('upg-1')];
      cp.kubectl(['patch', 'shp', 'upg', '--type=merge', '-p', '{"spec":{"sipServer":{"image":"kamailio:5.7"}}}']);
      await until(() => uid('upg-1') !== b0 && uid('upg-1') !== '', 30000, 'the backup pod is replaced');
      assert.equal(image('upg-1'), 'kamailio:5.7');
      assert.equal(uid('upg-0'), m0, 'the master stays while its backup is replaced');
      // The new pod's sidecar rejoins: not in sync at first (the master waits), then in sync.
      await r1.report('backup', 2, 'peer-is-master out-of-sync');
      await new Promise((r) => setTimeout(r, 3000));
      assert.doesNotMatch(r0.output(), /^handover/m, 'no switchover to a backup that is not in sync');
      await r1.report('backup', 2, 'peer-is-master in-sync');
      await until(() => /^handover 2$/m.test(r0.output()), 20000, 'upg-0 is asked to hand over');
      assert.equal(uid('upg-0'), m0, 'the master is never deleted');
      await r0.report('resigned', 2, 'switchover in-sync');
      await r1.report('master', 3, 'peer-resigned in-sync');
      await r0.report('backup', 2, 'rejoined in-sync');
      await until(() => uid('upg-0') !== m0 && uid('upg-0') !== '', 30000, 'the old master, now backup, is replaced');
      assert.equal(image('upg-0'), 'kamailio:5.7');
      await r0.report('backup', 3, 'peer-is-master in-sync');
      await until(
        () =>
          /UpgradingPod\s+\S+\s+sipha-operator\s+upgrading backup upg-1/.test(events()) &&
          /UpgradingPod\s+\S+\s+sipha-operator\s+upgrading backup upg-0/.test(events()) &&
          /SwitchoverDone\s+\S+\s+sipha-operator\s+upg-1 is master now/.test(events()),
        15000,
        'the Events tell the upgrade',
      );
      assert.equal(events().match(/SwitchoverRequested/g)?.length, 1, 'exactly one planned switchover');
    });
  });

  describe('the pair key (decision 0012)', () => {
    let r0: Reporter;
    let r1: Reporter;
    const events = () => cp.kubectl(['describe', 'shp', 'kr']);
    const secret = () => {
      const d = json(['get', 'secret', 'kr-replication']);
      const text = (k: string) => (d.data[k] === undefined ? undefined : Buffer.from(d.data[k], 'base64').toString());
      const ids = Object.keys(d.data)
        .filter((k) => /^key-\d+$/.test(k))
        .sort()
        .join(' ');
      return { ids, sign: text('sign-id'), done: d.metadata.annotations?.['sipha.io/rotated-for'], key2: text('key-2') };
    };
    before(async () => {
      cp.kubectl(['apply', '-f', '-'], pair('kr', VALID));
      await until(() => exists('pod', 'kr-0') && exists('pod', 'kr-1') && exists('secret', 'kr-replication'), 30000, 'pods, key');
      r0 = startReporter(cp, 'default', 'kr-0');
      r1 = startReporter(cp, 'default', 'kr-1');
      await r0.report('master', 2, 'elected in-sync keys=1');
      await r1.report('backup', 2, 'peer-is-master in-sync keys=1');
      await waitStatus('kr', (x) => x.phase === 'Replicating');
    });
    after(async () => {
      await r0?.stop();
      await r1?.stop();
    });

    it('is made as key 1 with the witness key beside it', () => {
      const s = secret();
      assert.equal(s.ids, 'key-1');
      assert.equal(s.sign, '1');
      assert.ok(json(['get', 'secret', 'kr-replication']).data['witness-key'], 'witness-key');
    });

    it('a sidecar that hears its peer with another key sets KeyMismatch and a Warning; it clears when the keys agree', async () => {
      await r1.report('backup', 2, 'peer-is-master out-of-sync keys=1 key-mismatch');
      const st = await waitStatus('kr', (x) => x.conditions?.some((c: Json) => c.type === 'KeyMismatch' && c.status === 'True'));
      const c = st.conditions.find((x: Json) => x.type === 'KeyMismatch');
      assert.equal(c.reason, 'PeerKeyMismatch');
      assert.match(c.message, /kr-1 hears the peer with a key not held/);
      await until(() => /Warning\s+KeyMismatch\s+\S+\s+sipha-operator\s+kr-1 hears/.test(events()), 10000, 'the Warning');
      await r1.report('backup', 2, 'peer-is-master in-sync keys=1');
      await waitStatus('kr', (x) => x.conditions?.some((c: Json) => c.type === 'KeyMismatch' && c.status === 'False'));
      await until(() => /Normal\s+KeysMatch/.test(events()), 10000, 'the Event that it is over');
    });

    it('rotates in three Secret patches, each once both sidecars hold what the last wrote; the request goes when done', async () => {
      cp.kubectl(['annotate', 'shp', 'kr', 'sipha.io/rotate-key=r1']);
      await until(() => secret().ids === 'key-1 key-2', 15000, 'key 2 added');
      const key2 = secret().key2;
      assert.equal(secret().sign, '1', 'both still sign with 1');
      await until(() => /KeyRotationWaiting.*to hold keys 1 and 2/s.test(events()), 10000, 'it says what it waits for');
      await r0.report('master', 2, 'elected in-sync keys=1,2');
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(secret().sign, '1', 'kr-1 does not hold key 2 yet: nobody signs with it');
      await r1.report('backup', 2, 'peer-is-master in-sync keys=1,2');
      await until(() => secret().sign === '2', 15000, 'sign with 2');
      assert.equal(secret().key2, key2, 'key 2 made once');
      await r1.report('backup', 2, 'peer-is-master in-sync keys=2,1');
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal(secret().ids, 'key-1 key-2', 'kr-0 still signs with 1: key 1 stays');
      await r0.report('master', 2, 'elected in-sync keys=2,1');
      await until(() => secret().ids === 'key-2', 15000, 'key 1 removed');
      assert.equal(secret().done, 'r1');
      await until(
        () => json(['get', 'shp', 'kr']).metadata.annotations?.['sipha.io/rotate-key'] === undefined,
        15000,
        'the request is removed',
      );
      const ev = events();
      for (const r of ['KeyRotationStarted', 'KeyRotationStep', 'KeyRotated']) assert.match(ev, new RegExp(r));
      assert.equal(secret().key2, key2, 'and the key the sidecars hold is the one that stays');
    });
  });

  describe('a replication Secret from before key ids (hmac-key alone)', () => {
    it('is read as key 1, and the first rotation pins the UDP arbiter key to it before it goes', async () => {
      cp.kubectl(['apply', '-f', '-'], pair('lg', VALID));
      await until(() => exists('secret', 'lg-replication'), 30000, 'the Secret');
      const key = randomBytes(32);
      // What an earlier operator made: the key as hmac-key, no ids, no witness key.
      cp.kubectl([
        'patch',
        'secret',
        'lg-replication',
        '--type=merge',
        '-p',
        JSON.stringify({
          data: {
            'key-1': null,
            'sign-id': null,
            'witness-key': null,
            'hmac-key': Buffer.from(key.toString('base64')).toString('base64'),
          },
        }),
      ]);
      cp.kubectl(['annotate', 'shp', 'lg', 'sipha.io/rotate-key=first']);
      const data = () => json(['get', 'secret', 'lg-replication']).data as Record<string, string>;
      await until(() => data()['key-2'] !== undefined, 15000, 'key 2 added');
      const text = (k: string) => Buffer.from(data()[k] ?? '', 'base64').toString();
      assert.equal(text('sign-id'), '1', 'still signing with the old key, now named by id');
      assert.equal(text('witness-key'), witnessKey(key).toString('base64'), 'the arbiter key the sidecars derived from key 1');
      cp.kubectl(['delete', 'shp', 'lg']);
    });
  });

  describe('a replication Secret deleted while the pair runs', () => {
    const events = () => cp.kubectl(['describe', 'shp', 'kl']);
    const running = (pod: string, phase: string) =>
      cp.kubectl(['patch', 'pod', pod, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status: { phase } })]);
    it('is not made again with a new key while a pod runs with the old one (a Warning says why); once none runs, it is', async () => {
      cp.kubectl(['apply', '-f', '-'], pair('kl', VALID));
      await until(
        () => exists('pod', 'kl-0') && exists('pod', 'kl-1') && exists('secret', 'kl-replication'),
        30000,
        'pods and key',
      );
      // The harness has no kubelet: say what a kubelet would. kl-0 runs with the key...
      running('kl-0', 'Running');
      cp.kubectl(['delete', 'secret', 'kl-replication']);
      // ...and kl-1, restarted after the Secret went, cannot start.
      cp.kubectl([
        'patch',
        'pod',
        'kl-1',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify({
          status: {
            phase: 'Pending',
            containerStatuses: [
              {
                name: 'sipha-sidecar',
                image: 'x',
                imageID: '',
                ready: false,
                restartCount: 1,
                state: { waiting: { reason: 'CreateContainerConfigError', message: 'secret "kl-replication" not found' } },
              },
            ],
          },
        }),
      ]);
      cp.kubectl(['annotate', 'shp', 'kl', 'nudge=1']); // a reconcile now, not at the next resync
      await until(() => /ReplicationKeyMissing/.test(events()), 15000, 'the Warning');
      assert.match(
        events(),
        /Warning\s+ReplicationKeyMissing\s+\S+\s+sipha-operator\s+Secret kl-replication is gone while a pod runs with its key: kl-1 cannot start/,
      );
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(exists('secret', 'kl-replication'), false, 'a new key would not match the one the running pod holds');
      running('kl-0', 'Failed');
      cp.kubectl(['annotate', 'shp', 'kl', 'nudge=2', '--overwrite']);
      await until(() => exists('secret', 'kl-replication'), 15000, 'made again once no pod holds the old key');
      cp.kubectl(['delete', 'shp', 'kl']);
    });
  });

  describe('deletion', () => {
    it('deleting the SipHaPair removes everything it owned (owner references, garbage collector)', async () => {
      cp.kubectl(['delete', 'shp', 'sip-edge']);
      await until(() => OWNED('sip-edge').every(([k, n]) => !exists(k as string, n as string)), 60000, 'owned objects removed');
      await until(() => !exists('pod', 'sip-edge-0') && !exists('pod', 'sip-edge-1'), 60000, 'pods removed');
    });
  });

  it('the CRD file parses as the served schema (printer columns in order)', () => {
    const crd = json(['get', 'crd', 'siphapairs.sipha.io']);
    const cols = crd.spec.versions[0].additionalPrinterColumns.map((c: { name: string }) => c.name);
    assert.deepEqual(cols, ['Master', 'Backup', 'Phase', 'VIP', 'Term', 'Age']);
    assert.ok(readFileSync(CRD, 'utf8').includes('shortNames: [shp]'));
  });
});
