/**
 * A rolling upgrade of a pair, driven by the operator (the StatefulSet is
 * `OnDelete`: pods change only when deleted). One pure decision per
 * reconcile: the outdated backup goes first; once the pod that replaced it is
 * an in-sync backup, a planned switchover (switchover.ts) makes it master;
 * then the old master, a backup by now, goes. One planned switchover per
 * upgrade, never an unplanned failover: the master is never deleted, and
 * nothing moves while the pair is not settled (a pod missing, starting, or a
 * backup out of sync).
 */
import type { PodView } from './status.ts';

export type UpgradePlan =
  /** Nothing outdated, or nothing to do now (waiting for the pair to settle, or for a switchover). */
  | { kind: 'idle' | 'wait'; why: string }
  /** Delete this outdated backup (the StatefulSet recreates it at the new revision). */
  | { kind: 'delete'; pod: string; message: string }
  /** The outdated pod is the master and the other an updated in-sync backup: switch over to it. */
  | { kind: 'switchover'; to: number; message: string };

export function upgradePlan(pods: PodView[], updateRevision: string | undefined, switchoverAsked: boolean): UpgradePlan {
  if (!updateRevision) return { kind: 'idle', why: 'no revision known yet' };
  const outdated = pods.filter((p) => p.revision !== undefined && p.revision !== updateRevision);
  if (outdated.length === 0) return { kind: 'idle', why: 'up to date' };
  if (switchoverAsked) return { kind: 'wait', why: 'a switchover is in progress' };
  const master = pods.filter((p) => p.role === 'master');
  const backup = pods.filter((p) => p.role === 'backup');
  if (pods.length !== 2 || master.length !== 1 || backup.length !== 1) {
    return { kind: 'wait', why: 'the pair is not one master and one backup' };
  }
  const [m, b] = [master[0], backup[0]] as [PodView, PodView];
  const to = (p: PodView) => `${p.revision} -> ${updateRevision}`;
  if (b.revision !== updateRevision) {
    // The master serves meanwhile: the backup may go whether it was in sync or not.
    return { kind: 'delete', pod: b.name, message: `upgrading backup ${b.name} (${to(b)}); ${m.name} serves meanwhile` };
  }
  if (b.inSync !== true) return { kind: 'wait', why: `${b.name} is not an in-sync backup yet` };
  return {
    kind: 'switchover',
    to: b.ordinal,
    message: `${b.name} is upgraded and in sync: switching over to it before upgrading ${m.name} (${to(m)})`,
  };
}
