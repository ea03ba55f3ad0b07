/**
 * One level-based, idempotent reconcile of one SipHaPair (kopf's shape):
 * read the pair, server-side-apply everything it owns with one field
 * manager, make the replication key once, fence a second master (and lift
 * the fence once it served), derive
 * the status from the pods and write it only when it changed (optimistic
 * lock on resourceVersion; a conflict retries the whole reconcile).
 */

import { randomBytes } from 'node:crypto';
import type { V1Pod } from '@kubernetes/client-node';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  FENCED_ANNOTATION,
  FIELD_MANAGER,
  GROUP,
  HANDOVER_ANNOTATION,
  PAIR_LABEL,
  PLURAL,
  ROLE_LABEL,
  ROTATE_KEY_ANNOTATION,
  ROTATED_FOR_ANNOTATION,
  SWITCHOVER_ANNOTATION,
  VERSION,
} from '../../contract/names.ts';
import type { SipHaPair, SipHaPairStatus, TlsSpec } from '../../contract/siphapair.ts';
import { appliedObjects, names, replicationSecret, vipService } from './desired.ts';
import type { EventRecorder } from './events.ts';
import { keyRotationPlan, rotationPatch, secretKeys } from './key-rotation.ts';
import { errorText, isConflict, isNotFound, type Kube, mergePatch } from './kube.ts';
import type { RetryAfter } from './queue.ts';
import { fencingVictim, liftableFences, nextStatus, observe, type PodView, sameStatus, type Transition } from './status.ts';
import { switchoverPlan } from './switchover.ts';
import { type TlsObjects, type TlsVerdict, tlsRefs, tlsVerdict, unreadable } from './tls-check.ts';
import { upgradePlan } from './upgrade.ts';
import { type Cidr, vipAllowed } from './vip-ranges.ts';

export interface ReconcileMetrics {
  applied: number;
  statusWrites: number;
}

export interface ReconcilerOptions {
  /** VIPs a pair may announce (the installer's allowedVipRanges); null: any. */
  allowedVipRanges?: Cidr[] | null;
}

/** How soon a reconcile decides again after its fence was refused (the pod changed since it was read). */
const FENCE_CONFLICT_RETRY_MS = 200;

/** How soon a reconcile looks again while a key rotation runs. */
const ROTATION_RECHECK_MS = 2000;
/**
 * How soon a pair whose spec.tls names something missing or unusable looks again: the
 * operator does not watch Secrets (it may not list them), so a Secret created or fixed
 * later is seen by this check, one get per named object.
 */
const TLS_RECHECK_MS = 5000;

export class Reconciler {
  readonly counters: ReconcileMetrics = { applied: 0, statusWrites: 0 };
  /** Pairs (by uid) told already that their Secret is gone while pods run. */
  private readonly keyMissingWarned = new Set<string>();
  /** Pairs (by uid) -> the last reason told why their key rotation cannot go on. */
  private readonly rotationBlocked = new Map<string, string>();
  private readonly kube: Kube;
  private readonly events: EventRecorder;
  private readonly log: Logger;
  private readonly ranges: Cidr[] | null;

  constructor(kube: Kube, events: EventRecorder, log: Logger, opts: ReconcilerOptions = {}) {
    this.kube = kube;
    this.events = events;
    this.log = log;
    this.ranges = opts.allowedVipRanges ?? null;
  }

  async reconcile(key: string): Promise<RetryAfter | undefined> {
    const [namespace, name] = key.split('/') as [string, string];
    let pair: SipHaPair;
    try {
      pair = (await this.kube.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        name,
      })) as SipHaPair;
    } catch (err) {
      if (isNotFound(err)) return undefined; // deleted: owner references let the GC remove what it owned
      throw err;
    }

    // A VIP outside the installer's ranges: nothing is created or changed (what exists stays).
    const allowed = vipAllowed(pair.spec.vip.address, this.ranges);
    // A TLS setting the pods could not use: the pods and what routes to them stay as they are.
    const tls = allowed && pair.spec.tls ? await this.checkTls(pair.spec.tls, namespace) : undefined;
    const tlsHeld = tls?.ok === false;
    for (const obj of allowed ? appliedObjects(pair, { holdTls: tlsHeld }) : []) {
      try {
        await this.kube.objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, k8s.PatchStrategy.ServerSideApply);
        this.counters.applied++;
      } catch (err) {
        // A rejected object is a permanent problem with the spec: say so where users look.
        await this.events.record(pair, 'Warning', 'ApplyFailed', `${obj.kind} ${obj.metadata?.name}: ${errorText(err)}`);
        throw err;
      }
    }
    const podList = await this.kube.core.listNamespacedPod({ namespace, labelSelector: `${PAIR_LABEL}=${name}` });
    if (allowed) await this.ensureSecret(pair, podList.items);

    const pods = observe(podList.items);
    await this.liftFences(pair, pods);
    const victim = fencingVictim(pods);
    if (victim) {
      try {
        await this.kube.core.patchNamespacedPod(
          {
            namespace,
            name: victim.name,
            body: {
              metadata: {
                // Only the pod as read: its sidecar may have stood down since (a rebooted node's
                // pod reporting backup), and a fence written over that report would stay for good.
                resourceVersion: victim.resourceVersion,
                labels: { [ROLE_LABEL]: 'fenced' },
                annotations: { [FENCED_ANNOTATION]: String(victim.term) },
              },
            },
          },
          mergePatch,
        );
      } catch (err) {
        if (!isConflict(err)) throw err;
        this.log.info({ pod: victim.name, term: victim.term }, 'the pod to fence changed since it was read; deciding again');
        return { retryAfterMs: FENCE_CONFLICT_RETRY_MS };
      }
      await this.events.record(
        pair,
        'Warning',
        'Fenced',
        `two pods claimed master: fenced ${victim.name} (term ${victim.term}), the lower term`,
      );
      victim.role = 'fenced';
      victim.fencedTerm = victim.term;
    }

    await this.switchover(pair, pods);
    // No pod is replaced while TLS is held: its replacement might not mount what spec.tls names.
    if (allowed && !tlsHeld) await this.upgrade(pair, pods);
    // A rotation in progress looks again soon: pods reporting their keys may be all that changes.
    const rotating = allowed ? await this.rotateKey(pair, pods) : false;

    const vip = allowed
      ? await this.vipAssigned(
          pair,
          pods.some((p) => p.role === 'master'),
        )
      : {
          ok: false,
          reason: 'VipNotAllowed',
          message: `${pair.spec.vip.address} is outside the allowed VIP ranges (${this.ranges?.map((r) => r.text).join(', ')}): nothing is created or changed`,
        };
    const { status, transitions } = nextStatus(pair, pods, new Date(), vip, tls);
    if (!allowed) refuse(pair, status, transitions, vip.message);
    if (!sameStatus(pair.status, status)) {
      await this.kube.custom.patchNamespacedCustomObjectStatus(
        {
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
          name,
          // A merge patch keeps keys it does not mention: absent fields are sent as null.
          body: {
            metadata: { resourceVersion: pair.metadata.resourceVersion },
            status: { master: null, backup: null, lastFailover: null, history: null, ...status },
          },
        },
        mergePatch,
      );
      this.counters.statusWrites++;
      for (const t of transitions) await this.events.record(pair, t.type, t.reason, t.message);
    }
    if (rotating) return { retryAfterMs: ROTATION_RECHECK_MS };
    return tlsHeld ? { retryAfterMs: TLS_RECHECK_MS } : undefined;
  }

  /**
   * Reads what spec.tls names (get by name: the operator may neither list nor watch
   * Secrets, decision 0013) and judges it (tls-check.ts). Another error than 404 is a
   * verdict too, not a failed reconcile: the rest of the pair goes on.
   */
  private async checkTls(tls: TlsSpec, namespace: string): Promise<TlsVerdict> {
    const refs = tlsRefs(tls);
    const found: TlsObjects = { secrets: new Map(), configMaps: new Map() };
    const read = async <T>(kind: string, name: string, get: () => Promise<T>, into: Map<string, T | null>) => {
      try {
        into.set(name, await get());
        return null;
      } catch (err) {
        if (isNotFound(err)) {
          into.set(name, null);
          return null;
        }
        return unreadable(kind, name, errorText(err));
      }
    };
    for (const name of refs.secrets) {
      const bad = await read('Secret', name, () => this.kube.core.readNamespacedSecret({ namespace, name }), found.secrets);
      if (bad) return bad;
    }
    for (const name of refs.configMaps) {
      const bad = await read(
        'ConfigMap',
        name,
        () => this.kube.core.readNamespacedConfigMap({ namespace, name }),
        found.configMaps,
      );
      if (bad) return bad;
    }
    return tlsVerdict(tls, found);
  }

  /**
   * A fence lives until the fenced pod stood down or moved to a newer term
   * (status.ts `liftableFences`); left on the pod, it would shut out a later
   * master. Lifting never changes who claims master: a lifted pod either
   * claims nothing or already outgrew the fence.
   */
  private async liftFences(pair: SipHaPair, pods: PodView[]): Promise<void> {
    for (const { pod, reason } of liftableFences(pods)) {
      await this.kube.core.patchNamespacedPod(
        {
          namespace: pair.metadata.namespace,
          name: pod.name,
          body: { metadata: { annotations: { [FENCED_ANNOTATION]: null } } },
        },
        mergePatch,
      );
      await this.events.record(
        pair,
        'Normal',
        'FenceLifted',
        `lifted the fence on ${pod.name} (term ${pod.fencedTerm}): ${reason}`,
      );
      pod.fencedTerm = undefined;
    }
  }

  /** Passes a user's switchover request on to the master pod, and ends it with an Event (switchover.ts). */
  private async switchover(pair: SipHaPair, pods: PodView[]): Promise<void> {
    const { namespace, name } = pair.metadata;
    const requested = pair.metadata.annotations?.[SWITCHOVER_ANNOTATION];
    const plan = switchoverPlan(name, requested, pods);
    const annotatePod = (pod: string, value: string | null) =>
      this.kube.core.patchNamespacedPod(
        { namespace, name: pod, body: { metadata: { annotations: { [HANDOVER_ANNOTATION]: value } } } },
        mergePatch,
      );
    if (plan.kind === 'ask') {
      if (pods.find((p) => p.name === plan.pod)?.handoverTerm !== plan.term) await annotatePod(plan.pod, String(plan.term));
    } else if (plan.kind === 'end') {
      for (const pod of plan.clearPods) await annotatePod(pod, null);
      if (requested !== undefined) await this.askSwitchover(pair, null);
    }
    if (plan.kind !== 'idle' && plan.event)
      await this.events.record(pair, plan.event.type, plan.event.reason, plan.event.message);
  }

  /** Sets (an ordinal) or removes (null) the switchover request on the pair, as a user's annotation would. */
  private async askSwitchover(pair: SipHaPair, ordinal: string | null): Promise<void> {
    await this.annotatePair(pair, SWITCHOVER_ANNOTATION, ordinal);
  }

  /** Sets or removes (null) one annotation on the pair. */
  private async annotatePair(pair: SipHaPair, key: string, value: string | null): Promise<void> {
    await this.kube.custom.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace: pair.metadata.namespace,
        plural: PLURAL,
        name: pair.metadata.name,
        body: { metadata: { annotations: { [key]: value } } },
      },
      mergePatch,
    );
  }

  /** One step of a rolling upgrade, when the StatefulSet's pods are behind its template (upgrade.ts). */
  private async upgrade(pair: SipHaPair, pods: PodView[]): Promise<void> {
    const { namespace, name } = pair.metadata;
    let updateRevision: string | undefined;
    try {
      const sts = await this.kube.apps.readNamespacedStatefulSet({ namespace, name: names(name).statefulSet });
      updateRevision = sts.status?.updateRevision;
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    const plan = upgradePlan(pods, updateRevision, pair.metadata.annotations?.[SWITCHOVER_ANNOTATION] !== undefined);
    if (plan.kind === 'delete') {
      await this.events.record(pair, 'Normal', 'UpgradingPod', plan.message);
      await this.kube.core.deleteNamespacedPod({ namespace, name: plan.pod });
    } else if (plan.kind === 'switchover') {
      await this.events.record(pair, 'Normal', 'UpgradeSwitchover', plan.message);
      await this.askSwitchover(pair, String(plan.to));
    } else if (plan.kind === 'wait') this.log.debug({ pair: name, why: plan.why }, 'upgrade waits');
  }

  /**
   * One step of a key rotation the user asked for (ROTATE_KEY_ANNOTATION; key-rotation.ts).
   * The Secret holds the state; the operator never gets or lists it: a merge patch of
   * its own annotation answers with the Secret, and that decides the step.
   */
  private async rotateKey(pair: SipHaPair, pods: PodView[]): Promise<boolean> {
    const requested = pair.metadata.annotations?.[ROTATE_KEY_ANNOTATION];
    if (requested === undefined) return false;
    const { namespace } = pair.metadata;
    const name = names(pair.metadata.name).secret;
    const uid = pair.metadata.uid ?? '';
    const patch = (body: object) => this.kube.core.patchNamespacedSecret({ namespace, name, body }, mergePatch);
    let secret: k8s.V1Secret;
    try {
      secret = await patch({ metadata: { annotations: { 'sipha.io/rotation-seen': requested } } });
    } catch (err) {
      if (isNotFound(err)) return true; // made on a later reconcile (ensureSecret)
      throw err;
    }
    const plan = keyRotationPlan(requested, secretKeys(secret.data, secret.metadata?.annotations, ROTATED_FOR_ANNOTATION), pods);
    if (plan.kind === 'idle') {
      // Done (or asked again with the value already served): the request goes, as a switchover's does.
      await this.annotatePair(pair, ROTATE_KEY_ANNOTATION, null);
      return false;
    }
    if (plan.kind === 'wait' || plan.kind === 'broken') {
      const message =
        plan.kind === 'wait' ? `rotation ${requested}: ${plan.why}` : `rotation ${requested} cannot go on: ${plan.message}`;
      if (this.rotationBlocked.get(uid) !== message) {
        this.rotationBlocked.set(uid, message);
        await this.events.record(
          pair,
          plan.kind === 'wait' ? 'Normal' : 'Warning',
          plan.kind === 'wait' ? 'KeyRotationWaiting' : 'KeyRotationBlocked',
          message,
        );
      }
      return plan.kind === 'wait';
    }
    this.rotationBlocked.delete(uid);
    await patch(rotationPatch(plan, secret.data, requested, randomBytes(32)));
    await this.events.record(pair, 'Normal', plan.event.reason, plan.event.message);
    return true;
  }

  /**
   * The replication key is created once, with random bytes, and never applied
   * again. Create, no get: the operator holds no right to read a Secret, so an
   * existing key answers AlreadyExists and stays as it is (rotation patches it). While a pod of the
   * pair runs it holds the key, so nothing is created then: a Secret deleted
   * meanwhile made again with a new key would start a restarted pod with a key
   * its peer does not have (with `witness: none`, both would serve). Such a pod
   * cannot start instead (its kubelet says the Secret is missing): a Warning
   * says why, once; the key is made anew when no pod runs.
   */
  private async ensureSecret(pair: SipHaPair, pods: V1Pod[]): Promise<void> {
    const name = names(pair.metadata.name).secret;
    const uid = pair.metadata.uid ?? '';
    if (pods.some((p) => p.status?.phase === 'Running')) {
      const blocked = pods
        .filter((p) =>
          (p.status?.containerStatuses ?? []).some(
            (c) => c.state?.waiting?.reason === 'CreateContainerConfigError' && c.state.waiting.message?.includes(name),
          ),
        )
        .map((p) => p.metadata?.name ?? '');
      if (blocked.length === 0) this.keyMissingWarned.delete(uid);
      else if (!this.keyMissingWarned.has(uid)) {
        this.keyMissingWarned.add(uid);
        await this.events.record(
          pair,
          'Warning',
          'ReplicationKeyMissing',
          `Secret ${name} is gone while a pod runs with its key: ${blocked.sort().join(', ')} cannot start; not made again with a new key (it would not match the running pod's); restore it, or stop both pods to start with a new one`,
        );
      }
      return;
    }
    try {
      await this.kube.objects.create(
        replicationSecret(pair, randomBytes(32), randomBytes(24).toString('base64url')),
        undefined,
        undefined,
        FIELD_MANAGER,
      );
    } catch (err) {
      if (isConflict(err)) return;
      throw err;
    }
    await this.events.record(
      pair,
      'Normal',
      'ReplicationKeyCreated',
      `created Secret ${name} with a new random replication key and link token`,
    );
  }

  private async vipAssigned(pair: SipHaPair, hasMaster: boolean): Promise<{ ok: boolean; reason: string; message: string }> {
    const vip = pair.spec.vip.address;
    if (pair.spec.vip.mode === 'arp') {
      return hasMaster
        ? { ok: true, reason: 'MasterAnnounces', message: `the master holds ${vip} and announces it by gratuitous ARP` }
        : { ok: false, reason: 'NoMaster', message: `no master holds ${vip}` };
    }
    const svc = vipService(pair);
    try {
      const s = await this.kube.core.readNamespacedService({
        namespace: pair.metadata.namespace,
        name: svc?.metadata?.name ?? '',
      });
      const ips = (s.status?.loadBalancer?.ingress ?? []).map((i) => i.ip);
      if (!ips.includes(vip)) {
        return {
          ok: false,
          reason: 'WaitingForLoadBalancer',
          message: `Service has no ingress ${vip} yet (${pair.spec.vip.mode} assigns it)`,
        };
      }
      return hasMaster
        ? { ok: true, reason: 'LoadBalancerReady', message: `${vip} routes to the master` }
        : { ok: false, reason: 'NoMaster', message: `${vip} is assigned but no pod is master` };
    } catch (err) {
      this.log.debug({ err: errorText(err) }, 'VIP Service not readable yet');
      return { ok: false, reason: 'ServiceMissing', message: 'the VIP Service does not exist yet' };
    }
  }
}

/** A refused pair is not Ready, for that reason; the refusal is told once, as a Warning Event. */
function refuse(pair: SipHaPair, status: SipHaPairStatus, transitions: Transition[], message: string): void {
  const ready = status.conditions?.find((c) => c.type === 'Ready');
  if (ready) Object.assign(ready, { status: 'False', reason: 'VipNotAllowed', message });
  const before = pair.status?.conditions?.find((c) => c.type === 'VIPAssigned');
  if (before?.reason !== 'VipNotAllowed') transitions.push({ type: 'Warning', reason: 'VipNotAllowed', message });
}
