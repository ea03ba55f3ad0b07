/**
 * Where a metallb-mode failover spends its time, from what the cluster and the
 * wire show (not from guesses): started before a fault, it records with the
 * machine's wall clock (ms)
 *   - when the API server's pod watch shows the new master's role label,
 *   - when the EndpointSlice watch shows the new master as the Service's ready endpoint,
 *   - when the first ARP frame announcing the VIP from the new node's MAC
 *     crosses the bridge (tcpdump on br0 in the switch netns: MetalLB's GARP),
 * Each watch is a kubectl -w in the control-plane netns whose lines are
 * stamped on arrival (a few ms late at most: same machine, loopback-class).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as k from './cluster.ts';

const SCRIPT = fileURLToPath(new URL('../../hack/cluster.sh', import.meta.url));

interface Stamped {
  at: number;
  line: string;
}

function stampLines(child: ChildProcess, into: Stamped[]): void {
  if (!child.stdout) throw new Error('no stdout to stamp');
  createInterface({ input: child.stdout }).on('line', (line) => into.push({ at: Date.now(), line }));
}

export interface LbTimeline {
  /** ms from the fault to each step; null: not seen before stop(). */
  labelMs: number | null;
  endpointsMs: number | null;
  garpMs: number | null;
}

export class LbTimelineRecorder {
  private readonly procs: ChildProcess[] = [];
  private readonly pods: Stamped[] = [];
  private readonly slices: Stamped[] = [];
  private readonly arp: Stamped[] = [];

  constructor(ns: string, service: string, vip: string) {
    const kc = (args: string[]) =>
      spawn('bash', [SCRIPT, 'kubectl', ...args], { stdio: ['ignore', 'pipe', 'ignore'], detached: true });
    const pods = kc([
      '-n',
      ns,
      'get',
      'pods',
      '-w',
      '--output-watch-events',
      '-o',
      'jsonpath={.object.metadata.name} {.object.metadata.labels.sipha\\.io/role}{"\\n"}',
    ]);
    const slices = kc([
      '-n',
      ns,
      'get',
      'endpointslices',
      '-l',
      `kubernetes.io/service-name=${service}`,
      '-w',
      '--output-watch-events',
      '-o',
      'jsonpath={range .object.endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}{"\\n"}',
    ]);
    // -tt: seconds since the epoch (µs), the same clock as Date.now(); -e: the sender's MAC.
    const arp = spawn(
      'ip',
      ['netns', 'exec', k.CLUSTER.switchNs, 'tcpdump', '-l', '-n', '-e', '-tt', '-i', 'br0', 'arp', 'and', 'host', vip],
      { stdio: ['ignore', 'pipe', 'ignore'], detached: true },
    );
    stampLines(pods, this.pods);
    stampLines(slices, this.slices);
    if (!arp.stdout) throw new Error('tcpdump: no stdout');
    createInterface({ input: arp.stdout }).on('line', (line) => {
      const t = Number(line.split(' ')[0]);
      if (Number.isFinite(t)) this.arp.push({ at: t * 1000, line });
    });
    this.procs.push(pods, slices, arp);
  }

  /** Resolves once both watches have listed (so a change after this is stamped when it happens). */
  async ready(timeoutMs = 20_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.pods.length === 0 || this.slices.length === 0) {
      if (Date.now() > end) throw new Error('the pod and EndpointSlice watches did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Ends the watches and reads the steps for a failover to `newMaster` (pod name, pod IP, its node's MAC). */
  stop(faultAt: number, newMaster: { pod: string; ip: string; mac: string }): LbTimeline {
    for (const p of this.procs) {
      try {
        if (p.pid) process.kill(-p.pid, 'SIGTERM');
      } catch {
        // already ended
      }
    }
    const first = (xs: Stamped[], ok: (line: string) => boolean) => {
      const hit = xs.find((x) => x.at >= faultAt && ok(x.line));
      return hit ? Math.round(hit.at - faultAt) : null;
    };
    return {
      labelMs: first(this.pods, (l) => l.includes(`${newMaster.pod} master`)),
      endpointsMs: first(this.slices, (l) => l.trim() === newMaster.ip),
      // A frame sent by the new node's MAC that says the VIP is at that MAC (request or reply form).
      garpMs: first(this.arp, (l) => l.toLowerCase().includes(newMaster.mac)),
    };
  }
}
