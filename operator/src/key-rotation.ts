/**
 * Rotating a pair's key without a restart (decision 0012). The key files are
 * the replication Secret mounted into each sidecar; the kubelet rewrites them
 * in place and the sidecar reads them every second. A rotation from key n to
 * n+1 is three merge patches of the Secret, each made only once every
 * sidecar that speaks says (KEYS_ANNOTATION) it holds what the last one wrote:
 *
 *   1. add key-<n+1>              both sign with n, both accept n+1
 *   2. sign-id = n+1              both sign with n+1, both accept n
 *   3. remove key-<n>; record the request as done
 *
 * So at every moment each side accepts what the other signs with. The Secret
 * itself holds the state (which keys, which signs, which request is done):
 * nothing is lost when the operator restarts halfway. Pure: `keyRotationPlan`
 * decides, reconcile.ts patches.
 */
import { keyEntry, keyLayout, LEGACY_KEY_ENTRY, SIGN_ID_ENTRY, WITNESS_KEY_ENTRY } from '../../contract/key-files.ts';
import { ROTATED_FOR_ANNOTATION } from '../../contract/names.ts';
import { witnessKey } from '../../contract/witness-wire.ts';
import type { PodView } from './status.ts';

/** What the Secret says, as its merge patches return it. */
export interface SecretKeys {
  /** Ids of key-<id> entries (a Secret from before key ids, hmac-key alone: [1]). */
  ids: number[];
  /** sign-id, else the only id. */
  signId: number;
  /** The rotation request recorded as done (ROTATED_FOR_ANNOTATION on the Secret). */
  doneFor: string | undefined;
  /** What is wrong with the Secret's keys, when something is (the sidecars cannot read it either). */
  broken?: string;
}

export type RotationPlan =
  | { kind: 'idle' }
  | { kind: 'wait'; why: string }
  | {
      kind: 'patch';
      step: 'add' | 'sign' | 'remove';
      /** Key ids: `add` makes key-<id> (random bytes), `sign` points sign-id at it, `remove` drops it. */
      id: number;
      /** Set on the last step: the request this rotation answered. */
      doneFor?: string;
      event: { reason: string; message: string };
    }
  | { kind: 'broken'; message: string };

/** Parses what a Secret's data says about its keys (values are base64, as the API returns them; layout: contract/key-files.ts). */
export function secretKeys(
  data: Record<string, string> | undefined,
  annotations: Record<string, string> | undefined,
  doneKey: string,
): SecretKeys {
  const d = data ?? {};
  const doneFor = annotations?.[doneKey];
  const signText = d[SIGN_ID_ENTRY] !== undefined ? Buffer.from(d[SIGN_ID_ENTRY], 'base64').toString('utf8') : null;
  try {
    const layout = keyLayout(Object.keys(d), signText);
    return { ids: layout.keys.map((k) => k.id), signId: layout.signId, doneFor };
  } catch (err) {
    return { ids: [], signId: 0, doneFor, broken: `the replication Secret: ${(err as Error).message}` };
  }
}

/**
 * The next step of the rotation `requested` asks for, given the Secret and
 * what the pods report. Only pods whose sidecar has spoken (a role label) are
 * waited for: a pod that starts meanwhile mounts the Secret as it is then.
 */
export function keyRotationPlan(requested: string | undefined, s: SecretKeys, pods: PodView[]): RotationPlan {
  if (s.broken !== undefined) return { kind: 'broken', message: s.broken };
  if (requested === undefined || requested === '' || requested === s.doneFor) return { kind: 'idle' };
  const speaking = pods.filter((p) => p.role !== undefined);
  const lagging = (ok: (keys: number[]) => boolean) =>
    speaking
      .filter((p) => p.keys === undefined || !ok(p.keys))
      .map((p) => `${p.name} (${p.keys?.join(',') ?? 'says nothing of its keys'})`);
  const n = s.signId;
  if (s.ids.length === 1) {
    return {
      kind: 'patch',
      step: 'add',
      id: n + 1,
      event: {
        reason: 'KeyRotationStarted',
        message: `rotation ${requested}: key ${n + 1} added beside key ${n}; both still sign with ${n}`,
      },
    };
  }
  const other = s.ids.find((i) => i !== n) as number;
  if (other > n) {
    // Step 1 done: sign with the new key once every sidecar holds it.
    const behind = lagging((k) => k.includes(n) && k.includes(other));
    if (behind.length > 0) return { kind: 'wait', why: `waiting for ${behind.join(', ')} to hold keys ${n} and ${other}` };
    return {
      kind: 'patch',
      step: 'sign',
      id: other,
      event: {
        reason: 'KeyRotationStep',
        message: `rotation ${requested}: every sidecar holds key ${other}; signing with it now`,
      },
    };
  }
  // Step 2 done: drop the old key once every sidecar signs with the new one.
  const behind = lagging((k) => k[0] === n);
  if (behind.length > 0) return { kind: 'wait', why: `waiting for ${behind.join(', ')} to sign with key ${n}` };
  return {
    kind: 'patch',
    step: 'remove',
    id: other,
    doneFor: requested,
    event: { reason: 'KeyRotated', message: `rotation ${requested}: every sidecar signs with key ${n}; key ${other} removed` },
  };
}

/**
 * The merge patch of the Secret for one step (values base64, as the API keeps
 * them). `fresh`: the bytes of the new key, for `add`. A Secret from before key
 * ids has no witness-key: `add` pins the UDP arbiter's key to the key in use
 * now, before it goes (the sidecars derived it from that one).
 */
export function rotationPatch(
  plan: Extract<RotationPlan, { kind: 'patch' }>,
  data: Record<string, string> | undefined,
  requested: string,
  fresh: Buffer,
): { data: Record<string, string | null>; metadata?: { annotations: Record<string, string> } } {
  const text = (v: string) => Buffer.from(v).toString('base64');
  if (plan.step === 'sign') return { data: { [SIGN_ID_ENTRY]: text(String(plan.id)) } };
  if (plan.step === 'remove') {
    return {
      data: { [keyEntry(plan.id)]: null, ...(plan.id === 1 ? { [LEGACY_KEY_ENTRY]: null } : {}) },
      metadata: { annotations: { [ROTATED_FOR_ANNOTATION]: plan.doneFor ?? requested } },
    };
  }
  const signId = plan.id - 1;
  const out: Record<string, string> = {
    [keyEntry(plan.id)]: text(fresh.toString('base64')),
    [SIGN_ID_ENTRY]: text(String(signId)),
  };
  const current = data?.[keyEntry(signId)] ?? (signId === 1 ? data?.[LEGACY_KEY_ENTRY] : undefined);
  if (data?.[WITNESS_KEY_ENTRY] === undefined && current !== undefined) {
    const key = Buffer.from(Buffer.from(current, 'base64').toString('utf8').trim(), 'base64');
    out[WITNESS_KEY_ENTRY] = text(witnessKey(key).toString('base64'));
  }
  return { data: out };
}
