/**
 * Names the operator and the sidecar must agree on. One place, so a label
 * key can never differ between the program that writes it and the one
 * that reads it.
 */
export const GROUP = 'sipha.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'SipHaPair';
export const PLURAL = 'siphapairs';

/** The sidecar's container in a pair's pods (its pino JSON logs are what `kubectl sipha logs` merges). */
export const SIDECAR_CONTAINER = 'sipha-sidecar';

/** The ONE role label: the VIP Service selects `role=master`; the sidecar writes it on its own pod. */
export const ROLE_LABEL = 'sipha.io/role';
/** Which pair a pod or object belongs to. */
export const PAIR_LABEL = 'sipha.io/pair';
export const APP_LABELS = { 'app.kubernetes.io/name': 'sipha', 'app.kubernetes.io/managed-by': 'sipha-operator' } as const;

/** Written by the sidecar on its own pod. */
export const TERM_ANNOTATION = 'sipha.io/term';
export const ROLE_REASON_ANNOTATION = 'sipha.io/role-reason';
export const ROLE_SINCE_ANNOTATION = 'sipha.io/role-since';
export const TAKEOVER_GAP_ANNOTATION = 'sipha.io/takeover-gap-ms';
/**
 * Written by the sidecar with a master report: the registrations its state
 * cache held when it began serving (what it took over). Read into status.history.
 */
export const TAKEOVER_REGISTRATIONS_ANNOTATION = 'sipha.io/takeover-registrations';
/**
 * Written by the sidecar on its own pod: "true" when the pair is in sync as it
 * sees it (master: its backup acked the full state; backup: its server holds the
 * master's), "false" otherwise. Drives the Replicating condition.
 */
export const IN_SYNC_ANNOTATION = 'sipha.io/in-sync';
/**
 * A planned switchover, asked for by the user on the SipHaPair:
 *   kubectl annotate shp NAME sipha.io/switchover=<ordinal of the pod to make master>
 * The operator passes it on to the master pod as HANDOVER_ANNOTATION (its
 * term); that pod's sidecar hands over if it is master at that term and its
 * backup is in sync, or says why not in HANDOVER_REFUSED_ANNOTATION
 * ("<term> <reason>"). The operator removes the request when it is done or
 * refused, with an Event either way.
 */
export const SWITCHOVER_ANNOTATION = 'sipha.io/switchover';
export const HANDOVER_ANNOTATION = 'sipha.io/handover';
export const HANDOVER_REFUSED_ANNOTATION = 'sipha.io/handover-refused';
/** Written by the operator on a pod it shut out: the sidecar demotes when it sees it. */
export const FENCED_ANNOTATION = 'sipha.io/fenced-term';
/**
 * The ids of the pair keys a sidecar holds, "<signing id>" or "<signing id>,<other accepted id>"
 * (decision 0012): the operator moves a key rotation on only once both pods hold what it wrote.
 */
export const KEYS_ANNOTATION = 'sipha.io/keys';
/** "true" while the sidecar hears its peer with a key it does not hold (condition KeyMismatch). */
export const KEY_MISMATCH_ANNOTATION = 'sipha.io/key-mismatch';
/** On a SipHaPair: a new value asks the operator for a key rotation (`kubectl sipha rotate-key`). */
export const ROTATE_KEY_ANNOTATION = 'sipha.io/rotate-key';
/** On the replication Secret: the rotation request whose last step was made (key-rotation.ts). */
export const ROTATED_FOR_ANNOTATION = 'sipha.io/rotated-for';

export const ROLES = ['starting', 'backup', 'master', 'resigned', 'fenced'] as const;
export type Role = (typeof ROLES)[number];

/** Phases read as words in `kubectl get shp`. */
export const PHASES = ['Pending', 'Replicating', 'Degraded', 'NoMaster', 'Fencing'] as const;
export type Phase = (typeof PHASES)[number];

/**
 * KeyMismatch is True while a sidecar hears its peer with a key it does not hold (decision 0012).
 * TLSReady, on pairs with spec.tls only: the Secrets and CA bundles it names are there and usable (decision 0013).
 */
export const CONDITIONS = ['Ready', 'Replicating', 'VIPAssigned', 'KeyMismatch', 'TLSReady'] as const;
export type ConditionType = (typeof CONDITIONS)[number];

/** status.history keeps this many role changes, oldest dropped first (the CRD's maxItems). */
export const HISTORY_LIMIT = 10;

export const FIELD_MANAGER = 'sipha-operator';

/**
 * A pair's sidecar identity: one ServiceAccount per pair, shared by its two pods.
 * The chart's admission policy (charts/sipha/templates/sidecar-policy.yaml) knows a
 * sidecar by this name; change both together.
 */
export function sidecarServiceAccount(pair: string): string {
  return `${pair}-sidecar`;
}

/**
 * All a sidecar may change on a pod, and only on its own (the chart's admission
 * policy lists the same keys; test/unit/sidecar-pod-keys.test.ts holds the two together).
 */
export const SIDECAR_POD_LABELS = [ROLE_LABEL] as const;
export const SIDECAR_POD_ANNOTATIONS = [
  TERM_ANNOTATION,
  ROLE_REASON_ANNOTATION,
  ROLE_SINCE_ANNOTATION,
  TAKEOVER_GAP_ANNOTATION,
  IN_SYNC_ANNOTATION,
  HANDOVER_REFUSED_ANNOTATION,
  TAKEOVER_REGISTRATIONS_ANNOTATION,
  KEYS_ANNOTATION,
  KEY_MISMATCH_ANNOTATION,
] as const;

/** The Lease that is the in-cluster witness of a pair (docs/decisions/0005). */
export function witnessLeaseName(pair: string): string {
  return `${pair}-witness`;
}
