/**
 * Hostile input against a serving pair (issue 9), on the netns bed with real
 * Kamailio and real sidecar processes: what an attacker on the node network
 * can do with recorded traffic and floods, without the pair's key.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { startCapture } from '../lib/capture.ts';
import type { Host, NetBed } from '../lib/netbed.ts';
import { type PairNode, pairBed, role, roleStory } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';

const HEARTBEAT_PORT = 5062;

/** The UDP payloads to `port` in a capture, in wire order (hex, as tshark prints them). */
function udpPayloads(path: string, port: number): string[] {
  const out = execFileSync('tshark', ['-r', path, '-n', '-d', `udp.port==${port},data`, '-T', 'fields', '-e', 'data.data'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return out
    .split('\n')
    .map((l) => l.trim().replaceAll(':', ''))
    .filter((l) => l.length > 0);
}

/** Sends recorded datagrams from `from` to target:port, in order, every `gapMs`, `rounds` times over. */
function replay(from: Host, target: string, port: number, payloads: string[], gapMs: number, rounds: number): void {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    const p = JSON.parse(process.argv[1]);
    let i = 0;
    const t = setInterval(() => {
      if (i >= p.length * ${rounds}) { clearInterval(t); s.close(); return; }
      s.send(Buffer.from(p[i++ % p.length], 'hex'), ${port}, '${target}');
    }, ${gapMs});`;
  from.run(process.execPath, ['-e', script, JSON.stringify(payloads)]);
}

const switchover = (n: PairNode) => n.host.run('curl', ['-s', '-m', '10', '-X', 'POST', 'http://127.0.0.1:9090/switchover']);
const roleChanges = (n: PairNode) =>
  n.sidecar
    .output()
    .split('\n')
    .filter((l) => l.includes('role change')).length;

describe('recorded heartbeats replayed into a serving pair (issue 9 item 1)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it("beats from the master's earlier start (master, resigned, backup) change no role when replayed", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { b, client } = pb;
    // Record a's beats while it is master, hands over (resigned) and rejoins as backup: start 1.
    const cap = await startCapture(bed, pb.a.host, `udp and src host ${pb.a.host.ip} and dst port ${HEARTBEAT_PORT}`);
    await sleep(300);
    assert.match(switchover(pb.a), /switched over/);
    await until(() => role(pb.a) === 'backup' && role(b) === 'master', 5000, 'b took over, a rejoined');
    await sleep(300);
    const recorded = udpPayloads(await cap.stop(), HEARTBEAT_PORT);
    assert.ok(recorded.length >= 20, `recorded ${recorded.length} beats`);

    // a restarts (start 2) and becomes master again by a switchover: a different incarnation.
    await bed.stop(pb.a.sidecar.child, 'SIGTERM');
    const a = await pb.a.restartSidecar();
    await until(() => role(a) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'a rejoined in sync');
    assert.match(switchover(b), /switched over/);
    await until(() => role(a) === 'master' && role(b) === 'backup', 5000, 'a is master again');
    await sleep(500);

    // The attacker replays start 1's beats to b (the sidecar knows its peer by key, not by address).
    const before = [roleChanges(a), roleChanges(b)];
    replay(client, b.host.ip, HEARTBEAT_PORT, recorded, 5, 2);
    await sleep(500);
    assert.deepEqual([roleChanges(a), roleChanges(b)], before, `no role changed\n${roleStory(a, b)}`);
    assert.equal(role(a), 'master');
    assert.equal(role(b), 'backup');
    assert.ok(
      b.sidecar.metric('sipha_heartbeats_dropped_total', { reason: 'stale' }) >= recorded.length,
      'the replayed beats were counted as stale',
    );
  });
});
