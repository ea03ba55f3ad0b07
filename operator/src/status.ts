/**
 * The pair's status from what its pods report (role label and term
 * annotation, written by each sidecar on its own pod). Pure functions:
 * `observe` reads pods, `nextStatus` derives phase, conditions and the
 * failover record, `fencingVictim` names the pod to shut out when two claim
 * master, `liftableFences` the fences to remove once they served. Ready
 * derives from the phase in one place.
 */
import type { V1Pod } from '@kubernetes/client-node';
import {
  type ConditionType,
  FENCED_ANNOTATION,
  HANDOVER_ANNOTATION,
  HANDOVER_REFUSED_ANNOTATION,
  IN_SYNC_ANNOTATION,
  KEY_MISMATCH_ANNOTATION,
  KEYS_ANNOTATION,
  type Phase,
  ROLE_LABEL,
  ROLE_REASON_ANNOTATION,
  ROLE_SINCE_ANNOTATION,
  ROLES,
  type Role,
  TAKEOVER_GAP_ANNOTATION,
  TAKEOVER_REGISTRATIONS_ANNOTATION,
  TERM_ANNOTATION,
} from '../../contract/names.ts';
import type { Condition, SipHaPair, SipHaPairStatus } from '../../contract/siphapair.ts';
import { lastKnownMaster, nextHistory } from './history.ts';

export interface PodView {
  name: string;
  ordinal: number;
  role: Role | undefined;
  term: number;
  reason: string | undefined;
  gapMs: number | undefined;
  /** When the sidecar's current role began (ISO time, ROLE_SINCE_ANNOTATION). */
  since: string | undefined;
  /** Registrations the sidecar held when it began serving (TAKEOVER_REGISTRATIONS_ANNOTATION). */
  registrations: number | undefined;
  fencedTerm: number | undefined;
  /** What the sidecar says of the pair's sync (IN_SYNC_ANNOTATION); undefined: not said. */
  inSync: boolean | undefined;
  /** The term at which the operator asked this pod to hand over (HANDOVER_ANNOTATION). */
  handoverTerm: number | undefined;
  /** "<term> <reason>": a handover this pod's sidecar refused. */
  handoverRefused: string | undefined;
  /** The StatefulSet revision the pod was made from (controller-revision-hash). */
  revision: string | undefined;
  /** The key ids the sidecar holds, signing id first (KEYS_ANNOTATION); undefined: not said. */
  keys: number[] | undefined;
  /** The sidecar hears its peer with a key it does not hold (KEY_MISMATCH_ANNOTATION). */
  keyMismatch: boolean;
  /** The version of the pod this view was read from: a write decided on it is made only if the pod is still so. */
  resourceVersion: string | undefined;
}

export function observe(pods: V1Pod[]): PodView[] {
  return pods
    .map((p) => {
      const labels = p.metadata?.labels ?? {};
      const ann = p.metadata?.annotations ?? {};
      const name = p.metadata?.name ?? '';
      const role = labels[ROLE_LABEL];
      const term = Number(ann[TERM_ANNOTATION] ?? 0);
      const gap = ann[TAKEOVER_GAP_ANNOTATION];
      const fenced = ann[FENCED_ANNOTATION];
      const sync = ann[IN_SYNC_ANNOTATION];
      const since = ann[ROLE_SINCE_ANNOTATION];
      return {
        name,
        ordinal: Number(name.slice(name.lastIndexOf('-') + 1)),
        role: (ROLES as readonly string[]).includes(role ?? '') ? (role as Role) : undefined,
        term: Number.isFinite(term) ? term : 0,
        reason: ann[ROLE_REASON_ANNOTATION],
        gapMs: gap !== undefined && Number.isFinite(Number(gap)) ? Number(gap) : undefined,
        since: since !== undefined && Number.isFinite(Date.parse(since)) ? new Date(since).toISOString() : undefined,
        registrations: count(ann[TAKEOVER_REGISTRATIONS_ANNOTATION]),
        fencedTerm: fenced !== undefined ? Number(fenced) : undefined,
        inSync: sync === 'true' ? true : sync === 'false' ? false : undefined,
        handoverTerm: ann[HANDOVER_ANNOTATION] !== undefined ? Number(ann[HANDOVER_ANNOTATION]) : undefined,
        handoverRefused: ann[HANDOVER_REFUSED_ANNOTATION],
        revision: labels['controller-revision-hash'],
        keys: keyIdList(ann[KEYS_ANNOTATION]),
        keyMismatch: ann[KEY_MISMATCH_ANNOTATION] === 'true',
        resourceVersion: p.metadata?.resourceVersion,
      };
    })
    .sort((a, b) => a.ordinal - b.ordinal);
}

/** "2,1" -> [2, 1]; anything else is not said. */
function keyIdList(text: string | undefined): number[] | undefined {
  if (text === undefined || !/^\d{1,9}(,\d{1,9}){0,2}$/.test(text)) return undefined;
  return text.split(',').map(Number);
}

/** A non-negative integer annotation, else undefined (a sidecar's word is parsed, not trusted). */
function count(text: string | undefined): number | undefined {
  const n = Number(text);
  return text !== undefined && text !== '' && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Pods claiming master that have not been fenced at their current term. */
function claimants(pods: PodView[]): PodView[] {
  return pods.filter((p) => p.role === 'master' && !(p.fencedTerm !== undefined && p.fencedTerm >= p.term));
}

/**
 * When two pods claim master, the lower term loses (tie: the higher ordinal
 * loses, as in the sidecars' own rule: term, then priority, then name).
 */
export function fencingVictim(pods: PodView[]): PodView | undefined {
  const c = claimants(pods);
  if (c.length < 2) return undefined;
  return [...c].sort((a, b) => a.term - b.term || b.ordinal - a.ordinal)[0];
}

/** Roles only the sidecar itself writes that say it is not serving (the operator writes `fenced`). */
const STOOD_DOWN: ReadonlySet<Role | undefined> = new Set<Role | undefined>(['backup', 'starting', 'resigned']);

/**
 * Fences that have done their job and must go, so that an old fence can
 * never shut out a later, legitimate master: the fenced pod has since said
 * it stood down (a non-master role it wrote itself), or it reports a term
 * newer than the one it was fenced at (re-elected after the fence). The
 * string is the reason, for the Event.
 */
export function liftableFences(pods: PodView[]): Array<{ pod: PodView; reason: string }> {
  const out: Array<{ pod: PodView; reason: string }> = [];
  for (const p of pods) {
    if (p.fencedTerm === undefined) continue;
    if (p.term > p.fencedTerm) out.push({ pod: p, reason: `it is at term ${p.term} now` });
    else if (STOOD_DOWN.has(p.role)) out.push({ pod: p, reason: `it reports ${p.role}` });
  }
  return out;
}

function phaseOf(master: PodView | undefined, backup: PodView | undefined, split: boolean, podCount: number): [Phase, string] {
  if (split) return ['Fencing', 'two pods claim master; the lower term is being fenced'];
  if (master && backup) return ['Replicating', `${master.name} is master, ${backup.name} replicates it`];
  if (master) return ['Degraded', `${master.name} is master with no backup`];
  if (podCount === 0) return ['Pending', 'no pods yet'];
  return ['NoMaster', 'no pod reports the master role'];
}

export interface Transition {
  /** Event reason and message to record, one per change. */
  reason: string;
  message: string;
  type: 'Normal' | 'Warning';
}

export function nextStatus(
  pair: SipHaPair,
  pods: PodView[],
  now: Date,
  vipAssigned: { ok: boolean; reason: string; message: string },
  /** Pairs with spec.tls: tls-check.ts's verdict; absent: no TLSReady condition. */
  tls?: { ok: boolean; reason: string; message: string },
): { status: SipHaPairStatus; transitions: Transition[] } {
  const prev = pair.status ?? {};
  const split = fencingVictim(pods) !== undefined;
  const claim = claimants(pods).sort((a, b) => b.term - a.term || a.ordinal - b.ordinal);
  const master = claim[0];
  const backup = pods.find((p) => p.role === 'backup' && p.name !== master?.name);
  const [phase, phaseMessage] = phaseOf(master, backup, split, pods.length);
  const term = Math.max(prev.term ?? 0, ...pods.map((p) => p.term));
  const gen = pair.metadata.generation ?? 0;
  const transitions: Transition[] = [];

  // One history entry per new master term; a change of pod is a failover, counted.
  const { history, added } = nextHistory(prev, master, now);
  let failoverCount = prev.failoverCount ?? 0;
  let lastFailover = prev.lastFailover;
  if (added) {
    const from = lastKnownMaster(prev);
    if (from === undefined) {
      transitions.push({ reason: 'MasterElected', type: 'Normal', message: added.change });
    } else if (from === added.to) {
      transitions.push({ reason: 'MasterReelected', type: 'Normal', message: added.change });
    } else {
      failoverCount++;
      lastFailover = {
        time: added.time,
        reason: added.reason,
        ...(added.detectToServingMs !== undefined ? { gapMs: added.detectToServingMs } : {}),
        from,
        to: added.to,
      };
      transitions.push({ reason: 'Failover', type: 'Warning', message: added.change });
    }
  }
  if (prev.master && !master) {
    transitions.push({ reason: 'MasterLost', type: 'Warning', message: `no pod claims master (was ${prev.master})` });
  }
  if (backup && backup.name !== prev.backup) {
    transitions.push({ reason: 'BackupJoined', type: 'Normal', message: `${backup.name} is backup` });
  }
  if (prev.phase !== phase && prev.phase !== undefined) {
    transitions.push({ reason: `Phase${phase}`, type: phase === 'Replicating' ? 'Normal' : 'Warning', message: phaseMessage });
  }

  const cond = (type: ConditionType, ok: boolean, reason: string, message: string): Condition => {
    const old = prev.conditions?.find((c) => c.type === type);
    const status = ok ? 'True' : 'False';
    return {
      type,
      status,
      reason,
      message,
      lastTransitionTime: old && old.status === status ? old.lastTransitionTime : now.toISOString(),
      observedGeneration: gen,
    };
  };
  const [replicating, replReason, replMessage] = replication(master, backup);
  const oldRepl = prev.conditions?.find((c) => c.type === 'Replicating');
  if (oldRepl && oldRepl.reason !== replReason && master && backup) {
    transitions.push(
      replicating
        ? { reason: 'BackupInSync', type: 'Normal', message: replMessage }
        : { reason: 'BackupOutOfSync', type: 'Warning', message: replMessage },
    );
  }
  const [mismatch, keyReason, keyMessage] = keyAgreement(pods);
  const oldKeys = prev.conditions?.find((c) => c.type === 'KeyMismatch');
  if (mismatch && oldKeys?.status !== 'True') transitions.push({ reason: 'KeyMismatch', type: 'Warning', message: keyMessage });
  if (!mismatch && oldKeys?.status === 'True') transitions.push({ reason: 'KeysMatch', type: 'Normal', message: keyMessage });
  // A TLS setting the pods cannot use is told once when it appears and once when it is fixed;
  // meanwhile Ready says why, whatever the pods do (they keep what they had, and a pod
  // restarted now would not start).
  const oldTls = prev.conditions?.find((c) => c.type === 'TLSReady');
  if (tls && !tls.ok && (oldTls?.status !== 'False' || oldTls.reason !== tls.reason)) {
    transitions.push({ reason: tls.reason, type: 'Warning', message: tls.message });
  }
  if (tls?.ok && oldTls?.status === 'False') transitions.push({ reason: tls.reason, type: 'Normal', message: tls.message });
  const tlsBroken = tls !== undefined && !tls.ok;
  const conditions = [
    tlsBroken ? cond('Ready', false, tls.reason, tls.message) : cond('Ready', phase === 'Replicating', phase, phaseMessage),
    cond('Replicating', replicating, replReason, replMessage),
    cond('VIPAssigned', vipAssigned.ok, vipAssigned.reason, vipAssigned.message),
    cond('KeyMismatch', mismatch, keyReason, keyMessage),
    ...(tls ? [cond('TLSReady', tls.ok, tls.reason, tls.message)] : []),
  ];

  const status: SipHaPairStatus = {
    phase,
    ...(master ? { master: master.name } : {}),
    ...(backup ? { backup: backup.name } : {}),
    term,
    failoverCount,
    ...(lastFailover ? { lastFailover } : {}),
    ...(history.length > 0 ? { history } : {}),
    conditions,
    observedGeneration: gen,
  };
  return { status, transitions };
}

/**
 * Replicating: a backup exists and neither sidecar says the pair is out of sync
 * (the master after a stalled stream or while the backup takes the state burst;
 * the backup until it holds the master's state). A sidecar that says nothing
 * (an older version) is taken at the backup role's word.
 */
function replication(master: PodView | undefined, backup: PodView | undefined): [boolean, string, string] {
  if (!backup) return [false, 'NoBackup', 'no pod reports the backup role'];
  // Between a master's exit and its backup's takeover: what the backup says of its state is
  // kept in the reason, so the takeover that follows knows whether it was in sync.
  if (!master) {
    return backup.inSync === false
      ? [false, 'NoMasterBackupOutOfSync', `no pod is master; ${backup.name} is backup but not in sync`]
      : [false, 'NoMasterBackupInSync', `no pod is master; ${backup.name} holds the last master's state`];
  }
  if (master.inSync === false || backup.inSync === false) {
    const who = master.inSync === false ? master.name : backup.name;
    return [false, 'BackupOutOfSync', `${backup.name} is backup but not in sync with ${master.name} (${who} says so): resyncing`];
  }
  return [true, 'BackupInSync', `${backup.name} follows ${master.name}`];
}

/**
 * KeyMismatch: a sidecar hears its peer speak with a key it does not hold
 * (decision 0012). Without a witness neither side then elects itself on the
 * other's silence, and nothing replicates until the keys agree.
 */
function keyAgreement(pods: PodView[]): [boolean, string, string] {
  const bad = pods.filter((p) => p.keyMismatch);
  const held = pods.map((p) => `${p.name} holds ${p.keys?.join(',') ?? '?'}`).join(', ');
  if (bad.length > 0) {
    return [
      true,
      'PeerKeyMismatch',
      `${bad.map((p) => p.name).join(' and ')} hear${bad.length === 1 ? 's' : ''} the peer with a key not held (${held}): no replication, and no self-election on the peer's silence without a witness`,
    ];
  }
  return [false, 'KeysMatch', pods.length > 0 ? `no sidecar reports a key mismatch (${held})` : 'no pods'];
}

/** Status equality that ignores key order (skip the write when nothing changed). */
export function sameStatus(a: SipHaPairStatus | undefined, b: SipHaPairStatus): boolean {
  return canonical(a ?? {}) === canonical(b);
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${k}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}
