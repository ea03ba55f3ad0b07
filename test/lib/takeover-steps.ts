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
}

interface LogLine {
  time: number;
  msg: string;
  from?: string;
  to?: string;
}

function sidecarLog(pod: string, faultAt: number): LogLine[] {
  const r = kubectlTry(['-n', NS, 'logs', pod, '-c', 'sipha-sidecar', '--since=120s']);
  if (r.code !== 0) return [];
  const lines: LogLine[] = [];
  for (const l of r.out.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as LogLine;
      if (typeof j.time === 'number' && j.time >= faultAt - 5) lines.push(j);
    } catch {
      // a line cut at the end of the stream
    }
  }
  return lines;
}

export function takeoverSteps(oldMaster: string, newMaster: string, faultAt: number): TakeoverSteps {
  const old = sidecarLog(oldMaster, faultAt);
  const next = sidecarLog(newMaster, faultAt);
  const at = (lines: LogLine[], match: (l: LogLine) => boolean) => {
    const l = lines.find(match);
    return l === undefined ? null : l.time - faultAt;
  };
  return {
    serverDownMs: at(old, (l) => l.msg === 'SIP server is down'),
    resignedMs: at(old, (l) => l.msg === 'role change' && l.from === 'master'),
    takeoverMs: at(next, (l) => l.msg === 'role change' && l.to === 'master'),
    servingMs: at(next, (l) => l.msg === 'serving as master'),
  };
}

/** Total CFS throttled time (ms) of a pod's containers so far, from the cgroup v1 cpu hierarchy; null if not found. */
export function podThrottledMs(pod: PodView): number | null {
  const root = '/sys/fs/cgroup/cpu';
  const want = [`pod${pod.uid}`, `pod${pod.uid.replaceAll('-', '_')}`];
  const found = findDir(root, want, 5);
  if (found === null) return null;
  let ns = 0;
  for (const e of readdirSync(found, { withFileTypes: true })) {
    if (!e.isDirectory()) continue; // the containers (and the sandbox)
    const stat = readFileSync(join(found, e.name, 'cpu.stat'), 'utf8');
    ns += Number(/^throttled_time (\d+)$/m.exec(stat)?.[1] ?? 0);
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
