/**
 * `kubectl sipha` against real sidecars (issue 11 items 3 and 4): the images
 * built here, the two-node cluster of hack/cluster.sh, the chart and the
 * example pair. What the API-server harness cannot show: the master's
 * replication lag read through the pod proxy, a takeover recorded in
 * status.history with the figures the sidecar itself measured and reported
 * (including the registrations it held), and both sidecars' logs merged.
 * The cluster is one per machine: run this under `flock /tmp/sipha-cluster.lock`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { delimiter, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k from '../lib/cluster.ts';
import {
  applyExample,
  clusterWithImages,
  injectFault,
  installOperator,
  isMaster,
  kubectl,
  NS,
  type PodView,
  pairStory,
  podKamailio,
  podWithRole,
  settled,
  sipClients,
  VIP,
} from '../lib/cluster-pair.ts';
import { k8sBinDir } from '../lib/control-plane.ts';
import { usrlocStat } from '../lib/kamailio.ts';
import type { NetBed } from '../lib/netbed.ts';
import { until } from '../lib/procs.ts';
import { runSipp, users } from '../lib/sipp.ts';

const PLUGIN_DIR = fileURLToPath(new URL('../../cli/', import.meta.url));
const REGISTERED = 200;

describe('kubectl sipha on the two-node cluster: real sidecars, their lag, their takeover figures, their logs', {
  timeout: 1_200_000,
}, () => {
  let client: NetBed | undefined;
  const aors = users('kp', REGISTERED);
  /** The plugin through kubectl, as a user on the cluster's network (its control-plane netns) runs it. */
  const sipha = (...args: string[]) => {
    const path = [PLUGIN_DIR, k8sBinDir(), dirname(process.execPath), process.env.PATH].join(delimiter);
    const r = spawnSync('nsenter', [`--net=/run/netns/${k.CLUSTER.controlPlaneNs}`, '--', 'kubectl', 'sipha', ...args], {
      env: { ...process.env, PATH: path, KUBECONFIG: join(k.clusterDir(), 'kubeconfig') },
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  before(async () => {
    clusterWithImages();
    client = sipClients();
    installOperator();
    applyExample();
    await until(settled, 180_000, 'the pair is Ready', pairStory);
  });

  after(async () => {
    await client?.destroy();
    if (process.env.SIPHA_KEEP_CLUSTER !== '1') k.clusterDown();
  });

  it("status NAME: roles, terms, in sync, and the master's replication lag p99 read through the pod proxy", async (t) => {
    const reg = await runSipp(client as NetBed, (client as NetBed).host('client'), {
      scenario: 'register.xml',
      target: `${VIP}:5060`,
      calls: REGISTERED,
      rate: 100,
      users: aors,
      timeoutS: 60,
    });
    assert.equal(reg.successful, REGISTERED, reg.errors);
    const master = podWithRole('master') as PodView;
    const backup = podWithRole('backup') as PodView;
    const r = sipha('status', 'sip-edge', '-n', NS);
    t.diagnostic(`kubectl sipha status sip-edge -n ${NS}\n${r.out}`);
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.out,
      new RegExp(`^${master.name}\\s+master\\s+\\d+\\s+yes\\s+\\d+(\\.\\d+)? ms\\s+\\S+ ago\\s+\\S+\\s+${master.node}$`, 'm'),
    );
    // A backup sends nothing to replicate: its lag is unknown, shown as "-".
    assert.match(r.out, new RegExp(`^${backup.name}\\s+backup\\s+\\d+\\s+yes\\s+-\\s+`, 'm'));
  });

  it("a takeover (the master's Kamailio killed) lands in history with the sidecar's own figures, and as an Event", async (t) => {
    const master = podWithRole('master') as PodView;
    const backup = podWithRole('backup') as PodView;
    await until(
      () => usrlocStat(podKamailio(backup.name), 'registered_users') === REGISTERED,
      20_000,
      'the backup holds every registration',
    );
    const before = (JSON.parse(kubectl('-n', NS, 'get', 'shp', 'sip-edge', '-o', 'json')).status.history ?? []).length;
    injectFault('kamailio-kill', master);
    await until(() => isMaster(backup.name), 20_000, 'the backup is master');
    let entry: Record<string, unknown> | undefined;
    await until(
      () => {
        const h = JSON.parse(kubectl('-n', NS, 'get', 'shp', 'sip-edge', '-o', 'json')).status.history ?? [];
        entry = h.length > before ? h.at(-1) : undefined;
        return entry?.to === backup.name;
      },
      20_000,
      'a history entry for the takeover',
    );
    const e = entry as Record<string, unknown>;
    assert.equal(e.from, master.name);
    assert.equal(typeof e.detectToServingMs, 'number', 'the sidecar reported its detection-to-serving time');
    assert.equal(e.registrations, REGISTERED, 'the new master held every registration when it began serving');
    assert.equal(e.wasInSync, true);
    const h = sipha('history', 'sip-edge', '-n', NS);
    t.diagnostic(`kubectl sipha history sip-edge -n ${NS}\n${h.out}`);
    assert.equal(h.code, 0, h.err);
    assert.match(
      h.out,
      new RegExp(
        `^\\S+Z\\s+${e.term}\\s+${master.name}\\s+${backup.name}\\s+${e.reason}\\s+${e.detectToServingMs} ms\\s+yes\\s+${REGISTERED}$`,
        'm',
      ),
    );
    const events = kubectl(
      '-n',
      NS,
      'get',
      'events',
      '--field-selector',
      'reason=Failover',
      '-o',
      'jsonpath={.items[*].message}',
    );
    assert.ok(events.includes(e.change as string), events);
  });

  it("logs: both sidecars' pino lines, merged by time, each prefixed with its pod", async (t) => {
    await until(settled, 180_000, 'the old master rejoined as backup', pairStory);
    const r = sipha('logs', 'sip-edge', '-n', NS, '--since', '30m');
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n');
    t.diagnostic(
      `kubectl sipha logs sip-edge -n ${NS} (${lines.length} lines; a role change from each pod)\n${lines.filter((l) => l.includes('"role change"')).join('\n')}`,
    );
    const prefixes = new Set(lines.map((l) => l.slice(0, l.indexOf(' '))));
    assert.deepEqual([...prefixes].sort(), ['[pod/sip-edge-0/sipha-sidecar]', '[pod/sip-edge-1/sipha-sidecar]']);
    const times = lines
      .map((l) => l.slice(l.indexOf(' ') + 1))
      .filter((l) => l.startsWith('{'))
      .map((l) => (JSON.parse(l) as { time: number }).time);
    assert.ok(times.length > 10, `${times.length} JSON lines`);
    assert.ok(
      times.every((x, i) => i === 0 || x >= (times[i - 1] as number)),
      'in time order',
    );
    for (const pod of ['sip-edge-0', 'sip-edge-1']) {
      assert.ok(
        lines.some((l) => l.startsWith(`[pod/${pod}/`) && l.includes('"role change"')),
        `${pod} logged its role changes`,
      );
    }
  });
});
