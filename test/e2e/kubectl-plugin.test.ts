/**
 * `kubectl sipha` (issue 11 item 4) run as a user runs it: the real kubectl
 * finds cli/kubectl-sipha on PATH, against a real kube-apiserver + etcd +
 * controller-manager with the real operator; the sidecars' reports on the
 * pods come from the sidecar's own reporter process (test/lib/operator.ts),
 * as in the operator's e2e. No kubelet here: `logs` can only show that it
 * asks the API server for both sidecars' logs and says why it got none; the
 * merge is a unit test (test/unit/kubectl-sipha.test.ts).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { delimiter } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type ControlPlane, startControlPlane } from '../lib/control-plane.ts';
import { type Operator, type Reporter, startOperator, startReporter } from '../lib/operator.ts';
import { until } from '../lib/procs.ts';

const CRD = fileURLToPath(new URL('../../crds/siphapair.yaml', import.meta.url));
const PLUGIN_DIR = fileURLToPath(new URL('../../cli/', import.meta.url));
const PAIR = `apiVersion: sipha.io/v1alpha1
kind: SipHaPair
metadata:
  name: edge
spec:
  sipServer:
    image: kamailio:5.6
  vip:
    address: 198.18.0.100
`;

interface Run {
  code: number | null;
  out: string;
  err: string;
}

describe('kubectl sipha, the plugin, on a real kube-apiserver', { timeout: 600_000 }, () => {
  let cp: ControlPlane;
  let op: Operator;
  let r0: Reporter;
  let r1: Reporter;
  // kubectl and the plugin both on PATH; the kubeconfig as a user has it.
  const env = () => ({
    ...process.env,
    PATH: `${PLUGIN_DIR}${delimiter}${cp.bin}${delimiter}${process.env.PATH}`,
    KUBECONFIG: cp.kubeconfig,
  });
  const sipha = (...args: string[]): Run => {
    const r = spawnSync('kubectl', ['sipha', ...args], { env: env(), encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const status = () => JSON.parse(cp.kubectl(['get', 'shp', 'edge', '-o', 'json'])).status ?? {};
  /** The plugin running in the background: what it printed so far (both streams) and its exit. */
  const background = (...args: string[]) => {
    const child = spawn('kubectl', ['sipha', ...args], { env: env() });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { output: () => out, exited };
  };

  before(async () => {
    cp = await startControlPlane();
    cp.kubectl(['apply', '-f', CRD]);
    cp.kubectl(['wait', '--for=condition=Established', 'crd/siphapairs.sipha.io', '--timeout=30s']);
    op = await startOperator(cp, { identity: 'op-plugin', metricsPort: 18190 });
    cp.kubectl(['apply', '-f', '-'], PAIR);
    await until(
      () => cp.kubectlTry(['get', 'pod', 'edge-0']).code === 0 && cp.kubectlTry(['get', 'pod', 'edge-1']).code === 0,
      30000,
      'pods',
    );
    r0 = startReporter(cp, 'default', 'edge-0');
    r1 = startReporter(cp, 'default', 'edge-1');
    await r0.report('master', 1, 'elected in-sync');
    await r1.report('backup', 1, 'peer-is-master in-sync');
    await until(() => status().phase === 'Replicating', 15000, 'Replicating');
  });

  after(async () => {
    await r0?.stop();
    await r1?.stop();
    await op?.stop();
    await cp?.stop();
  });

  it('kubectl lists the plugin, and `kubectl sipha --help` says what it does', () => {
    const list = spawnSync('kubectl', ['plugin', 'list'], { env: env(), encoding: 'utf8' });
    assert.match(list.stdout, /kubectl-sipha$/m);
    const help = sipha('--help');
    assert.equal(help.code, 0);
    assert.match(help.out, /kubectl sipha switchover NAME --to <0\|1\|POD>/);
  });

  it('status with no name: one line per pair, as kubectl get would show it', () => {
    const r = sipha('status');
    assert.equal(r.code, 0, r.err);
    const [head, row, more] = r.out.trim().split('\n');
    assert.match(head as string, /^NAME\s+PHASE\s+MASTER\s+BACKUP\s+TERM\s+IN SYNC\s+FAILOVERS\s+LAST FAILOVER$/);
    assert.match(row as string, /^edge\s+Replicating\s+edge-0\s+edge-1\s+1\s+yes\s+0\s+-$/);
    assert.equal(more, undefined);
  });

  it('history and status NAME after a failover: who took over, why, how fast, in sync, registrations held', async (t) => {
    await r1.report('master', 2, 'peer-heartbeat-lost registrations=1000', 87);
    await r0.report('resigned', 1, 'server-dead');
    await r0.report('backup', 2, 'rejoined in-sync');
    await r1.report('master', 2, 'peer-heartbeat-lost in-sync registrations=1000', 87);
    await until(
      () => {
        const s = status();
        return s.master === 'edge-1' && s.backup === 'edge-0' && s.phase === 'Replicating';
      },
      15000,
      'edge-1 master, edge-0 backup',
    );

    const h = sipha('history', 'edge');
    assert.equal(h.code, 0, h.err);
    const lines = h.out.trim().split('\n');
    assert.match(lines[0] as string, /^TIME\s+TERM\s+FROM\s+TO\s+REASON\s+DETECT->SERVING\s+WAS IN SYNC\s+REGISTRATIONS$/);
    assert.match(lines[1] as string, /^\S+Z\s+1\s+\(first\)\s+edge-0\s+elected\s+-\s+-\s+-$/);
    assert.match(lines[2] as string, /^\S+Z\s+2\s+edge-0\s+edge-1\s+peer-heartbeat-lost\s+87 ms\s+yes\s+1000$/);
    assert.equal(lines.length, 3);

    const s = sipha('status', 'edge');
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /^Pair:\s+default\/edge$/m);
    assert.match(s.out, /^Phase:\s+Replicating \(edge-1 is master, edge-0 replicates it\)$/m);
    assert.match(s.out, /^VIP:\s+198\.18\.0\.100 \(arp\)$/m);
    assert.match(s.out, /^Failovers:\s+1$/m);
    // No kubelet: the pods never run, so the sidecars' lag cannot be read ("-", never a made-up 0).
    assert.match(s.out, /^edge-0\s+backup\s+2\s+yes\s+-\s+\S+ ago\s+rejoined\s+-$/m);
    assert.match(s.out, /^edge-1\s+master\s+2\s+yes\s+-\s+\S+ ago\s+peer-heartbeat-lost\s+-$/m);
    assert.match(s.out, /^Replicating\s+True\s+BackupInSync\s+edge-0 follows edge-1$/m);
    assert.match(s.out, /^\S+Z\s+2\s+edge-0\s+edge-1\s+peer-heartbeat-lost\s+87 ms\s+yes\s+1000$/m);
    // What a user sees (the docs quote it), in the test report.
    t.diagnostic(`kubectl sipha status edge\n${s.out}\nkubectl sipha history edge\n${h.out}`);
    t.diagnostic(`kubectl describe shp edge\n${cp.kubectl(['describe', 'shp', 'edge'])}`);
  });

  it('switchover --to POD asks the operator and waits for SwitchoverDone', async (t) => {
    const run = background('switchover', 'edge', '--to', 'edge-0', '--timeout', '30s');
    // The operator passes the request on to the master pod; its sidecar hands over (decision 0006).
    await until(() => /^handover 2$/m.test(r1.output()), 15000, 'edge-1 is asked to hand over at term 2');
    assert.doesNotMatch(run.output(), /SwitchoverDone/, 'the plugin waits for the outcome');
    await r1.report('resigned', 2, 'switchover in-sync');
    await r0.report('master', 3, 'peer-resigned in-sync registrations=1000', 9);
    await r1.report('backup', 3, 'rejoined in-sync');
    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /^SwitchoverDone: edge-0 is master now \(term 3\)$/m);
    const h = sipha('history', 'edge').out;
    assert.match(h, /^\S+Z\s+3\s+edge-1\s+edge-0\s+peer-resigned\s+9 ms\s+yes\s+1000$/m);
    t.diagnostic(`kubectl sipha switchover edge --to edge-0 --timeout 30s\n${run.output()}\nkubectl sipha history edge\n${h}`);
  });

  it('switchover to a backup that is not in sync: the operator refuses, the plugin says why and exits 1', async () => {
    await r1.report('backup', 3, 'rejoined out-of-sync');
    await until(() => status().conditions?.some((c: { reason: string }) => c.reason === 'BackupOutOfSync'), 15000, 'out of sync');
    const r = sipha('switchover', 'edge', '--to', '1', '--timeout', '30s');
    assert.equal(r.code, 1, r.out);
    assert.match(r.err, /^error: SwitchoverRefused: edge-1 is not an in-sync backup/m);
    assert.equal(
      JSON.parse(cp.kubectl(['get', 'shp', 'edge', '-o', 'json'])).metadata.annotations?.['sipha.io/switchover'],
      undefined,
    );
  });

  it('rotate-key asks the operator, prints each step as the sidecars catch up, and ends at KeyRotated', async (t) => {
    const run = background('rotate-key', 'edge', '--timeout', '60s');
    const role = (r: Reporter, line: string) => r.report(line.split(' ')[0] as string, 3, line.split(' ').slice(1).join(' '));
    await until(
      () => /^KeyRotationStarted: .*key 2 added beside key 1/m.test(run.output()),
      20000,
      'step 1 printed',
      () => run.output(),
    );
    await role(r0, 'master peer-resigned in-sync keys=1,2');
    await role(r1, 'backup rejoined out-of-sync keys=1,2');
    await until(
      () => /^KeyRotationStep: .*signing with it now/m.test(run.output()),
      20000,
      'step 2 printed',
      () => run.output(),
    );
    await role(r0, 'master peer-resigned in-sync keys=2,1');
    await role(r1, 'backup rejoined out-of-sync keys=2,1');
    assert.equal(await run.exited, 0, run.output());
    assert.match(run.output(), /^KeyRotated: rotation \S+: every sidecar signs with key 2; key 1 removed$/m);
    t.diagnostic(`kubectl sipha rotate-key edge\n${run.output()}`);
    const again = sipha('rotate-key', 'nope');
    assert.equal(again.code, 1);
    assert.match(again.err, /^error: siphapair "nope" not found/m);
  });

  it('logs asks the API server for both sidecars; with no kubelet it says, per pod, that there is no log yet', () => {
    const r = sipha('logs', 'edge', '--tail', '50');
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, '');
    assert.match(r.err, /^edge-0: no log: the pod is not on a node yet$/m);
    assert.match(r.err, /^edge-1: no log: the pod is not on a node yet$/m);
    const none = sipha('logs', 'nosuch');
    assert.equal(none.code, 1);
    assert.equal(none.err.trim(), 'error: siphapair "nosuch" not found in namespace default');
  });

  it('reads --namespace, --context and --kubeconfig like kubectl, and says what is wrong', () => {
    cp.kubectl(['create', 'namespace', 'other']);
    const empty = sipha('status', '-n', 'other');
    assert.equal(empty.code, 0, empty.err);
    assert.equal(empty.out.trim(), 'No SipHaPairs found.');
    const missing = sipha('history', 'edge', '--namespace=other');
    assert.equal(missing.code, 1);
    assert.equal(missing.err.trim(), 'error: siphapair "edge" not found in namespace other');
    const ctx = sipha('status', '--context', 'nowhere');
    assert.equal(ctx.code, 1);
    assert.equal(ctx.err.trim(), 'error: context "nowhere" does not exist');
    const explicit = spawnSync('kubectl', ['sipha', 'status', '--kubeconfig', cp.kubeconfig], {
      env: { ...env(), KUBECONFIG: '/nonexistent' },
      encoding: 'utf8',
    });
    assert.equal(explicit.status, 0, explicit.stderr);
    assert.match(explicit.stdout, /^edge\s+Replicating\s+edge-0\s+edge-1\s+3\s+NO\s+2\s+/m);
    const bad = sipha('switchover', 'edge', '--to', '2');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /--to must be 0, 1, edge-0 or edge-1 \(got 2\)/);
    const unknown = sipha('promote', 'edge');
    assert.equal(unknown.code, 1);
    assert.match(unknown.err, /^error: unknown command "promote"/);
  });
});
