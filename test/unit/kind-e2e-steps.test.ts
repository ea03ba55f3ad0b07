/**
 * hack/kind-e2e.sh cannot run here (no Docker engine), so nothing would
 * notice it drifting from the product: these checks read it against what it
 * depends on. It must parse, inject the same faults as the cluster e2e that
 * runs in `npm test`, and name only files, labels, containers and values that
 * exist (a renamed label or container would make it wait 180 s and fail on
 * a user's machine, which is where it runs).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { PAIR_LABEL, ROLE_LABEL } from '../../contract/names.ts';

const root = new URL('../../', import.meta.url).pathname;
const read = (p: string) => readFileSync(root + p, 'utf8');
const script = read('hack/kind-e2e.sh');

describe('hack/kind-e2e.sh (for users with Docker)', () => {
  it('parses as bash', () => {
    const r = spawnSync('bash', ['-n', `${root}hack/kind-e2e.sh`], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  it('injects the faults the cluster e2e injects, in the same order, each handled', () => {
    const e2e = read('test/e2e/cluster.test.ts');
    const listed = /for \(const fault of \[([^\]]+)\]/.exec(e2e)?.[1];
    assert.ok(listed, 'the e2e fault list');
    const e2eFaults = [...listed.matchAll(/'([a-z-]+)'/g)].map((m) => m[1]);
    const kindFaults = /^for f in ([a-z -]+); do fault/m.exec(script)?.[1]?.trim().split(/\s+/);
    assert.deepEqual(kindFaults, e2eFaults);
    for (const f of e2eFaults) assert.match(script, new RegExp(`^\\s+${f}\\)`, 'm'), `a case for ${f}`);
  });

  it('uses what exists: SIP scenarios, the example and its VIP line, labels, container names', () => {
    for (const [, file] of script.matchAll(/-sf ([\w-]+\.xml)/g)) assert.ok(existsSync(`${root}test/sipp/${file}`), file);
    const example = read('examples/siphapair.yaml');
    const vipEdit = /sed "s\/(address: [\d.]+)\//.exec(script)?.[1];
    assert.ok(vipEdit && example.includes(vipEdit), `the VIP line it rewrites (${vipEdit}) is in the example`);
    assert.match(example, new RegExp(`name: ${/^PAIR=(\S+)/m.exec(script)?.[1]}$`, 'm'), 'the pair name');
    assert.match(example, new RegExp(`configMap: ${/create configmap (\S+)/.exec(script)?.[1]}$`, 'm'), 'the ConfigMap');
    assert.ok(script.includes(`${PAIR_LABEL}=$PAIR,${ROLE_LABEL}=$1`), 'the role label query');
    assert.ok(script.includes(`{.metadata.labels.${ROLE_LABEL.replaceAll('.', '\\.')}}`), "a pod's own role label");
    assert.match(read('operator/src/desired.ts'), new RegExp(`name: '${/-c ([\w-]+) -- kamcmd/.exec(script)?.[1]}'`));
    const ctl = /kamcmd -s (\S+)/.exec(script)?.[1] as string;
    assert.ok(example.includes(ctl), `Kamailio's control socket ${ctl} as the example sets it`);
    const operatorLabel = /delete pod -l (\S+)/.exec(script)?.[1]?.replace('=', ': ') as string;
    assert.ok(read('charts/sipha/templates/deployment.yaml').includes(operatorLabel), operatorLabel);
  });

  it('every docker and kind command it calls is answered by the shims hack/kind-e2e-here.sh runs it with', () => {
    const docker = read('hack/kind-shim/docker');
    const kind = read('hack/kind-shim/kind');
    // Its commands: not its comments, nor the loop that checks the tools are there.
    const code = script
      .split('\n')
      .filter((l) => !/^\s*#/.test(l) && !/^for t in /.test(l))
      .join('\n');
    const dockerCalls = new Set([...code.matchAll(/\bdocker ([a-z]+)/g)].map((m) => m[1] as string));
    const kindCalls = new Set([...code.matchAll(/\bkind ([a-z]+ [a-z-]+)/g)].map((m) => m[1] as string));
    assert.ok(dockerCalls.size >= 6 && kindCalls.size >= 3, `found ${[...dockerCalls]} and ${[...kindCalls]}`);
    for (const c of dockerCalls) assert.match(docker, new RegExp(`^  ${c}\\)`, 'm'), `docker ${c} is answered`);
    for (const c of kindCalls) assert.ok(kind.includes(`"${c}")`), `kind ${c} is answered`);
    // The shims stand for Docker only: kubectl and helm reach the cluster unchanged.
    for (const pkill of script.matchAll(/docker exec "\$node" (pkill -KILL -[xf]) /g))
      assert.ok(docker.includes('"pkill -KILL"'), pkill[1]);
  });
});
