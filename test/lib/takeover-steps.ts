/**
 * Where an arp-mode failover of the pair as pods spends its time: the steps
 * as the two sidecars logged them (pino's `time`, epoch ms, on the same
 * clock as the bench), and how long the kernel throttled each pod's
 * containers (CFS quota: a CPU limit) meanwhile. For the cluster bench's
 * Kamailio kill, which takes longer as pods than on the netns bed.
 */
import { type Dirent, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { kubectlTry } from './cluster.ts';
import { NS, type PodView } from './cluster-pair.ts';
import { type LogLine, logLines } from './sidecar.ts';

/** ms after the fault; null: not logged (e.g. the old master's node crashed with its logs). */
export interface TakeoverSteps {
  /** The old master's sidecar saw its SIP server down. */
  serverDownMs: number | null;
  /** The old master left the master role. */
  resignedMs: number | null;
  /** The backup decided to take over. */
  takeoverMs: number | null;
  /** The new master holds the VIP and serves. */
  servingMs: number | null;
  /** The first message in through the VIP after serving (the network's part ends here). */
  firstInMs: number | null;
  /** The first message out to a client after serving (the server's part ends here). */
  firstOutMs: number | null;
}

function sidecarLog(pod: string, faultAt: number): LogLine[] {
  // A pod on a crashed node: its kubelet never answers, and kubectl logs would wait for good.
  const r = kubectlTry(['-n', NS, 'logs', pod, '-c', 'sipha-sidecar', '--since=120s', '--request-timeout=20s']);
  if (r.code !== 0) return [];
  return logLines(r.out).filter((l) => l.time >= faultAt - 5);
}

export function takeoverSteps(oldMaster: string, newMaster: string, faultAt: number): TakeoverSteps {
  const old = sidecarLog(oldMaster, faultAt);
  const next = sidecarLog(newMaster, faultAt);
  const at = (lines: LogLine[], match: (l: LogLine) => boolean) => {
    const l = lines.find(match);
    return l === undefined ? null : l.time - faultAt;
  };
  const servingMs = at(next, (l) => l.msg === 'serving as master');
  // Logged a second later, relative to serving (ha-node.ts traceFirstMessages).
  const first = next.find((l) => l.msg === 'first messages after taking over');
  const plus = (x: unknown) => (servingMs === null || typeof x !== 'number' ? null : servingMs + x);
  return {
    serverDownMs: at(old, (l) => l.msg === 'SIP server is down'),
    resignedMs: at(old, (l) => l.msg === 'role change' && l.from === 'master'),
    takeoverMs: at(next, (l) => l.msg === 'role change' && l.to === 'master'),
    servingMs,
    firstInMs: plus(first?.firstInMs),
    firstOutMs: plus(first?.firstOutMs),
  };
}

/**
 * CFS throttled time (ns) so far of a pod's cgroup and of each of its
 * containers' (cgroup v1 cpu hierarchy), by directory; null if the pod's is
 * not found. A container restarted meanwhile (a killed Kamailio) has a new
 * directory: compare with `throttledMsBetween`, which counts only those in both.
 */
export function podThrottle(pod: PodView): Map<string, number> | null {
  const found = findDir('/sys/fs/cgroup/cpu', [`pod${pod.uid}`, `pod${pod.uid.replaceAll('-', '_')}`], 5);
  if (found === null) return null;
  const out = new Map<string, number>();
  const read = (dir: string) => {
    try {
      out.set(dir, Number(/^throttled_time (\d+)$/m.exec(readFileSync(join(dir, 'cpu.stat'), 'utf8'))?.[1] ?? 0));
    } catch {
      // gone meanwhile (a container that ended)
    }
  };
  read(found);
  try {
    for (const e of readdirSync(found, { withFileTypes: true })) if (e.isDirectory()) read(join(found, e.name));
  } catch {
    // the pod's cgroup went meanwhile
  }
  return out;
}

/** Throttled ms between two snapshots, over the cgroups present in both. */
export function throttledMsBetween(before: Map<string, number>, after: Map<string, number>): number {
  let ns = 0;
  for (const [dir, t] of after) {
    const b = before.get(dir);
    if (b !== undefined) ns += t - b;
  }
  return ns / 1e6;
}

function findDir(dir: string, names: string[], depth: number): string | null {
  if (depth < 0) return null;
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return null;
  }
  for (const e of entries) if (e.isDirectory() && names.includes(e.name)) return join(dir, e.name);
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const f = findDir(join(dir, e.name), names, depth - 1);
    if (f !== null) return f;
  }
  return null;
}
