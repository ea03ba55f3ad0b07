/**
 * Where a metallb-mode failover spends its time, from what the cluster and the
 * wire show (not from guesses): started before a fault, it records with the
 * machine's wall clock (ms)
 *   - when the API server's pod watch shows the new master's role label,
 *   - when the EndpointSlice watch shows the new master as the Service's ready endpoint,
 *   - when kube-proxy on the new master's node next synced its rules (its own gauge),
 *   - when the first ARP frame announcing the VIP from the new node's MAC
 *     crosses the bridge (tcpdump on br0 in the switch netns: MetalLB's GARP),
 * Each watch is a kubectl -w in the control-plane netns whose lines are
 * stamped on arrival by a process of their own (a few ms late at most); tcpdump
 * and kube-proxy carry their own timestamps.
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

/**
 * Stamps each line of `child`'s output in a process of its own (`date` per
 * line): the test's event loop is blocked while it injects a fault (execFileSync
 * of kubectl or hack/cluster.sh), and a line stamped there would carry the time
 * the fault call returned, not when the line came.
 */
function stampLines(child: ChildProcess, into: Stamped[]): ChildProcess {
  if (!child.stdout) throw new Error('no stdout to stamp');
  const stamper = spawn('bash', ['-c', 'while IFS= read -r l; do echo "$(date +%s%3N) $l"; done'], {
    stdio: [child.stdout, 'pipe', 'ignore'],
    detached: true,
  });
  if (!stamper.stdout) throw new Error('stamper: no stdout');
  createInterface({ input: stamper.stdout }).on('line', (l) => {
    const sp = l.indexOf(' ');
    into.push({ at: Number(l.slice(0, sp)), line: l.slice(sp + 1) });
  });
  return stamper;
}

/** The ready addresses in one EndpointSlice's `endpoints` (JSON; empty when it has none). */
export function readyAddresses(json: string): string[] {
  if (json.trim() === '') return [];
  const eps = (JSON.parse(json) ?? []) as Array<{ addresses: string[]; conditions?: { ready?: boolean } }>;
  return eps.filter((e) => e.conditions?.ready === true).flatMap((e) => e.addresses);
}

export interface LbTimeline {
  /** ms from the fault to each step; null: not seen before stop(). */
  /** The new master's own takeover time (its pod's sipha.io/role-since, written by its sidecar). */
  takeoverMs: number | null;
  /** The role label as the API server's pod watch delivers it. */
  labelMs: number | null;
  endpointsMs: number | null;
  /** The new master's node: kube-proxy's first rules sync after the EndpointSlice change (its own timestamp). */
  proxySyncMs: number | null;
  garpMs: number | null;
}

export class LbTimelineRecorder {
  private readonly procs: ChildProcess[] = [];
  private readonly pods: Stamped[] = [];
  private readonly slices: Stamped[] = [];
  private readonly arp: Stamped[] = [];
  private readonly proxySyncs = new Map<string, Stamped[]>();

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
      // (a jsonpath filter on conditions.ready ends the watch at the first endpoint without it)
      'jsonpath={.object.endpoints}{"\\n"}',
    ]);
    // -tt: seconds since the epoch (µs), the same clock as Date.now(); -e: the sender's MAC.
    const arp = spawn(
      'ip',
      ['netns', 'exec', k.CLUSTER.switchNs, 'tcpdump', '-l', '-n', '-e', '-tt', '-i', 'br0', 'arp', 'and', 'host', vip],
      { stdio: ['ignore', 'pipe', 'ignore'], detached: true },
    );
    // kube-proxy's own clock for each rules sync (its gauge of the last one), read every 100 ms
    // (it syncs at most once a second: minSyncPeriod), bounded to 60 s.
    const proxies = k.NODES.map((n) => {
      const p = spawn(
        'ip',
        [
          'netns',
          'exec',
          k.nodeNs(n),
          'sh',
          '-c',
          'for i in $(seq 600); do curl -s --max-time 1 http://127.0.0.1:10249/metrics | grep "^kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=.IPv4.}"; sleep 0.1; done',
        ],
        { stdio: ['ignore', 'pipe', 'ignore'], detached: true },
      );
      if (!p.stdout) throw new Error('kube-proxy poller: no stdout');
      createInterface({ input: p.stdout }).on('line', (line) => {
        const at = Number(line.split(' ')[1]) * 1000;
        const seen = this.proxySyncs.get(n) ?? [];
        if (Number.isFinite(at) && !seen.some((x) => x.at === at)) seen.push({ at, line });
        this.proxySyncs.set(n, seen);
      });
      return p;
    });
    this.procs.push(...proxies);
    this.procs.push(stampLines(pods, this.pods), stampLines(slices, this.slices));
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
  stop(faultAt: number, newMaster: { pod: string; ip: string; mac: string; node: string; roleSince: string }): LbTimeline {
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
    // Among the ready ones is enough: after a node crash the old master's pod stays ready
    // (and labelled) until the operator fences it or the node is NotReady.
    const endpointsMs = first(this.slices, (l) => readyAddresses(l).includes(newMaster.ip));
    const sync =
      endpointsMs === null ? undefined : (this.proxySyncs.get(newMaster.node) ?? []).find((x) => x.at >= faultAt + endpointsMs);
    const since = Date.parse(newMaster.roleSince);
    return {
      takeoverMs: Number.isFinite(since) ? since - faultAt : null,
      labelMs: first(this.pods, (l) => l.includes(`${newMaster.pod} master`)),
      endpointsMs,
      proxySyncMs: sync ? Math.round(sync.at - faultAt) : null,
      // A frame sent by the new node's MAC that says the VIP is at that MAC (request or reply form).
      garpMs: first(this.arp, (l) => l.toLowerCase().includes(newMaster.mac)),
    };
  }
}
