/**
 * The in-cluster witness (a coordination.k8s.io/v1 Lease) against a real
 * kube-apiserver + etcd (hack/build-k8s.sh): two claimants, the higher term
 * wins, renewal, expiry, concurrent claims through the optimistic lock, the
 * RBAC the sidecar needs, and `unreachable` when the API server hangs or is
 * gone.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import type { WitnessVerdict } from '../../sidecar/src/ha/witness.ts';
import { LeaseWitness, type LeaseWitnessOptions } from '../../sidecar/src/kube/lease-witness.ts';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { sleep } from '../lib/procs.ts';

const NS = 'default';

function expectVerdict<V extends WitnessVerdict['verdict']>(
  v: WitnessVerdict,
  verdict: V,
): Extract<WitnessVerdict, { verdict: V }> {
  assert.equal(v.verdict, verdict, JSON.stringify({ ...v, err: v.verdict === 'unreachable' ? v.err?.message : undefined }));
  return v as Extract<WitnessVerdict, { verdict: V }>;
}

/** The same cluster and token, acting as another user (RBAC applies to that user). */
function impersonating(kc: k8s.KubeConfig, user: string): k8s.KubeConfig {
  const k = new k8s.KubeConfig();
  const u = kc.getCurrentUser() as k8s.User;
  k.loadFromOptions({
    clusters: kc.clusters,
    users: [{ ...u, impersonateUser: user }],
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return k;
}

describe('Lease witness on a real kube-apiserver', { timeout: 300_000 }, () => {
  let cp: ControlPlane;
  let kc: k8s.KubeConfig;
  const witnesses: LeaseWitness[] = [];
  const side = (pair: string, ordinal: 0 | 1, o: Partial<LeaseWitnessOptions> = {}) => {
    const w = new LeaseWitness({
      kc,
      namespace: NS,
      pair,
      pod: `${pair}-${ordinal}`,
      ordinal,
      ttlMs: 1000,
      timeoutMs: 3000,
      ...o,
    });
    witnesses.push(w);
    return w;
  };
  const lease = (name: string) => JSON.parse(cp.kubectl(['get', 'lease', name, '-n', NS, '-o', 'json']));

  before(async () => {
    cp = await startControlPlane({ controllerManager: false });
    kc = new k8s.KubeConfig();
    kc.loadFromFile(cp.kubeconfig);
  });

  after(async () => {
    for (const w of witnesses) w.close();
    await cp?.stop();
  });

  describe('two sides of one pair', () => {
    let a: LeaseWitness;
    let b: LeaseWitness;
    before(() => {
      a = side('p', 0);
      b = side('p', 1);
    });

    it('the first claimant creates <pair>-witness and holds it: pod name as holder, term in the annotation', async () => {
      const g = expectVerdict(await a.claim(2), 'granted');
      const answered = performance.now();
      assert.equal(g.reason, 'free');
      assert.equal(g.term, 2);
      // Counted from when the write was sent: within one duration from now, and not over.
      assert.ok(g.validUntil > answered && g.validUntil <= answered + 1000, `validUntil in ${g.validUntil - answered} ms`);
      const l = lease('p-witness');
      assert.equal(l.spec.holderIdentity, 'p-0');
      assert.equal(l.spec.leaseDurationSeconds, 1);
      assert.equal(l.metadata.annotations['sipha.io/term'], '2');
      assert.equal(l.spec.leaseTransitions, 0);
    });

    it('the other side is refused while the lease runs, and told who holds it at which term', async () => {
      const r = expectVerdict(await b.claim(1), 'refused');
      assert.equal(r.reason, 'held');
      assert.deepEqual([r.holder, r.holderTerm], [0, 2]);
      assert.ok(r.remainingMs > 0 && r.remainingMs <= 1000, `remainingMs ${r.remainingMs}`);
    });

    it('the holder renews: same holder, new renewTime, no transition', async () => {
      const before = lease('p-witness');
      await sleep(20);
      assert.equal(expectVerdict(await a.claim(2), 'granted').reason, 'renewal');
      const l = lease('p-witness');
      assert.equal(l.spec.holderIdentity, 'p-0');
      assert.notEqual(l.spec.renewTime, before.spec.renewTime);
      assert.equal(l.spec.acquireTime, before.spec.acquireTime);
      assert.equal(l.spec.leaseTransitions, 0);
    });

    it('a higher term does not take an unexpired lease: the holder keeps it', async () => {
      const r = expectVerdict(await b.claim(3), 'refused');
      assert.deepEqual([r.holder, r.holderTerm], [0, 2]);
      const l = lease('p-witness');
      assert.equal(l.spec.holderIdentity, 'p-0');
      assert.equal(l.spec.leaseTransitions, 0);
    });

    it('a silent holder’s lease expires one duration after the claimant saw its last write, not before', async (t) => {
      expectVerdict(await a.claim(2), 'granted');
      const since = performance.now();
      const took: number[] = [];
      let granted: WitnessVerdict | null = null;
      while (performance.now() - since < 5000) {
        const t1 = performance.now();
        const v = await b.claim(3);
        took.push(performance.now() - t1);
        if (v.verdict === 'granted') {
          granted = v;
          break;
        }
        expectVerdict(v, 'refused');
        await sleep(100);
      }
      const waited = performance.now() - since;
      assert.equal(expectVerdict(granted as WitnessVerdict, 'granted').reason, 'expired');
      assert.ok(waited >= 1000 && waited < 2500, `granted after ${Math.round(waited)} ms`);
      const l = lease('p-witness');
      assert.equal(l.spec.holderIdentity, 'p-1');
      assert.equal(l.metadata.annotations['sipha.io/term'], '3');
      assert.equal(l.spec.leaseTransitions, 1);
      took.sort((x, y) => x - y);
      t.diagnostic(
        `claim round trip on loopback: median ${took[took.length >> 1]?.toFixed(1)} ms, max ${took.at(-1)?.toFixed(1)} ms over ${took.length}`,
      );
    });
  });

  it('a side that follows the Lease (a watch) takes over a silent holder at once when its last write is older than a duration', async () => {
    const a = side('f', 0);
    const b = side('f', 1);
    b.follow();
    expectVerdict(await a.claim(4), 'granted');
    // The holder goes silent; the follower saw its last write as it happened.
    await sleep(1300);
    const t0 = performance.now();
    const v = expectVerdict(await b.claim(5), 'granted');
    assert.equal(v.reason, 'expired');
    assert.ok(performance.now() - t0 < 500, 'no wait of a full duration at the takeover');
    // And never early: a fresh write by the holder is honoured for a full duration from when it was seen.
    const c = side('g', 0);
    const d = side('g', 1);
    d.follow();
    expectVerdict(await c.claim(4), 'granted');
    await sleep(300);
    expectVerdict(await d.claim(5), 'refused');
  });

  it('concurrent claims on a free Lease race through the optimistic lock: exactly one side gets it, every round', async (t) => {
    let conflicts = 0;
    for (let round = 0; round < 10; round++) {
      const lo = side(`race${round}`, 0);
      const hi = side(`race${round}`, 1);
      const [l, h] = await Promise.all([lo.claim(2), hi.claim(3)]);
      const granted = [l, h].filter((v) => v.verdict === 'granted').length;
      const refused = [l, h].filter((v) => v.verdict === 'refused').length;
      assert.deepEqual([granted, refused], [1, 1], `round ${round}: ${JSON.stringify([l, h])}`);
      const winner = l.verdict === 'granted' ? 0 : 1;
      assert.equal(lease(`race${round}-witness`).spec.holderIdentity, `race${round}-${winner}`, `round ${round}`);
      conflicts += lo.conflicts + hi.conflicts;
    }
    // Both read the same version and write: the loser's 409 must have been re-read, not turned into `unreachable`.
    t.diagnostic(`409 conflicts re-read and decided again: ${conflicts} in 10 rounds`);
    assert.ok(conflicts >= 1, 'the race never produced a 409: the optimistic-lock path went untested');
  });

  describe('RBAC: what the sidecar’s Role must allow', () => {
    // One service account per rule set, so one test's Role cannot lend rights to the other.
    const user = (sa: string) => `system:serviceaccount:${NS}:${sa}`;
    const role = (sa: string, rules: string) =>
      cp.kubectl(
        ['apply', '-f', '-'],
        `apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: ${sa}, namespace: ${NS}}\nrules:\n${rules}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: ${sa}, namespace: ${NS}}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ${sa}}\nsubjects:\n- {kind: ServiceAccount, name: ${sa}, namespace: ${NS}}\n`,
      );

    it('get+update on the one Lease by name, plus create (which RBAC cannot limit by name), is enough', async () => {
      role(
        'sidecar-a',
        [
          '- {apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [rbac-witness], verbs: [get, update, list, watch]}',
          '- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create]}',
        ].join('\n'),
      );
      const w = side('rbac', 0, { kc: impersonating(kc, user('sidecar-a')) });
      // The watch by name (list + watch with fieldSelector metadata.name) is allowed by resourceNames too.
      const warnings: string[] = [];
      const log = {
        warn: (o: unknown, m: string) => warnings.push(`${m} ${JSON.stringify(o, Object.getOwnPropertyNames(o ?? {}))}`),
        info: (o: { err?: unknown }, m: string) => warnings.push(`${m} ${String(o?.err)}`),
        error: (o: unknown, m: string) => warnings.push(`${m} ${JSON.stringify(o)}`),
        debug: () => {},
        child: () => log,
      };
      w.follow(log as never);
      assert.equal(expectVerdict(await w.claim(2), 'granted').reason, 'free', 'create, then');
      assert.equal(expectVerdict(await w.claim(2), 'granted').reason, 'renewal', 'get and update');
      await sleep(500);
      assert.deepEqual(
        warnings.filter((x) => /403|forbidden/i.test(x)),
        [],
        'the watch is allowed',
      );
      // Any other Lease is out of reach (get is by name).
      const other = expectVerdict(await side('other', 0, { kc: impersonating(kc, user('sidecar-a')) }).claim(2), 'unreachable');
      assert.equal(other.reason, 'api-403');
    });

    it('create limited by resourceNames is refused by the API server: the Lease must be pre-created, or create granted unnamed', async () => {
      role(
        'sidecar-b',
        '- {apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [named-witness], verbs: [get, update, create]}',
      );
      const w = side('named', 0, { kc: impersonating(kc, user('sidecar-b')) });
      const v = expectVerdict(await w.claim(2), 'unreachable');
      assert.equal(v.reason, 'api-403');
      // Pre-created (by the operator, say), the named rule suffices.
      cp.kubectl(
        ['apply', '-f', '-'],
        `apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: named-witness, namespace: ${NS}}\nspec: {}\n`,
      );
      assert.equal(expectVerdict(await w.claim(2), 'granted').reason, 'free');
    });
  });

  it('is unreachable when the API server accepts a connection but never answers: at the claim’s deadline', async () => {
    const hang = net.createServer(() => {}); // holds every connection, says nothing
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
    try {
      const dead = new k8s.KubeConfig();
      dead.loadFromOptions({
        clusters: [
          { name: 'hang', server: `https://127.0.0.1:${(hang.address() as net.AddressInfo).port}`, skipTLSVerify: true },
        ],
        users: [{ name: 'u', token: 'x' }],
        contexts: [{ name: 'c', cluster: 'hang', user: 'u' }],
        currentContext: 'c',
      });
      const w = side('hang', 0, { kc: dead, timeoutMs: 300 });
      const t0 = performance.now();
      const v = expectVerdict(await w.claim(2), 'unreachable');
      const took = performance.now() - t0;
      assert.equal(v.reason, 'timeout');
      assert.ok(took >= 290 && took < 1500, `unreachable after ${Math.round(took)} ms`);
    } finally {
      hang.close();
    }
  });

  it('is unreachable when the API server is stopped (last: it ends the control plane)', async () => {
    const w = side('stopped', 0);
    expectVerdict(await w.claim(4), 'granted');
    await cp.stop();
    const t0 = performance.now();
    const v = expectVerdict(await w.claim(4), 'unreachable');
    assert.equal(v.reason, 'api-error');
    assert.ok(v.err instanceof Error);
    assert.ok(performance.now() - t0 < 3000);
  });
});
