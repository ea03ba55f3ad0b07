/**
 * Wires watches to the keyed queue and the reconciler. Every event on a
 * SipHaPair, or on anything labelled with a pair (pods, owned objects),
 * queues that pair; the queue coalesces bursts into one reconcile.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ResilientWatch } from '../../contract/kube-watch.ts';
import { API_VERSION, PAIR_LABEL, PLURAL } from '../../contract/names.ts';
import { errorText, type Kube } from './kube.ts';
import { KeyedQueue } from './queue.ts';
import type { Reconciler } from './reconcile.ts';

/** Watched so a hand edit is repaired. Not Secrets: the operator never reads a key (it may only create one). */
const OWNED: Array<{ apiVersion: string; kind: string; group: string; plural: string }> = [
  { apiVersion: 'v1', kind: 'Pod', group: '', plural: 'pods' },
  { apiVersion: 'apps/v1', kind: 'StatefulSet', group: 'apps/v1', plural: 'statefulsets' },
  { apiVersion: 'v1', kind: 'Service', group: '', plural: 'services' },
  { apiVersion: 'v1', kind: 'ServiceAccount', group: '', plural: 'serviceaccounts' },
  { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', group: 'rbac.authorization.k8s.io/v1', plural: 'roles' },
  {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    group: 'rbac.authorization.k8s.io/v1',
    plural: 'rolebindings',
  },
  { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', group: 'policy/v1', plural: 'poddisruptionbudgets' },
];

function collectionPath(group: string, plural: string, namespace?: string): string {
  const base = group === '' ? '/api/v1' : `/apis/${group}`;
  return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
}

export class Controller {
  readonly queue: KeyedQueue;
  private watches: ResilientWatch[] = [];
  private readonly kube: Kube;
  private readonly namespace: string | undefined;
  private readonly log: Logger;

  constructor(kube: Kube, reconciler: Reconciler, namespace: string | undefined, log: Logger, concurrency = 8) {
    this.kube = kube;
    this.namespace = namespace;
    this.log = log;
    this.queue = new KeyedQueue(
      (key) => reconciler.reconcile(key),
      (key, err) => log.warn({ pair: key, err: errorText(err) }, 'reconcile failed; will retry'),
      concurrency,
    );
  }

  start(): void {
    const enqueuePair = (_t: string, o: KubernetesObject) => {
      if (o.metadata?.namespace && o.metadata.name) this.queue.add(`${o.metadata.namespace}/${o.metadata.name}`);
    };
    const enqueueOwner = (_t: string, o: KubernetesObject) => {
      const pair = o.metadata?.labels?.[PAIR_LABEL];
      if (pair && o.metadata?.namespace) this.queue.add(`${o.metadata.namespace}/${pair}`);
    };
    this.watches = [
      new ResilientWatch(
        this.kube.kc,
        {
          apiVersion: API_VERSION,
          kind: 'SipHaPair',
          namespace: this.namespace,
          path: collectionPath(API_VERSION, PLURAL, this.namespace),
        },
        enqueuePair,
        this.log,
      ),
      ...OWNED.map(
        (o) =>
          new ResilientWatch(
            this.kube.kc,
            {
              apiVersion: o.apiVersion,
              kind: o.kind,
              namespace: this.namespace,
              path: collectionPath(o.group, o.plural, this.namespace),
              labelSelector: PAIR_LABEL,
            },
            enqueueOwner,
            this.log,
          ),
      ),
    ];
    for (const w of this.watches) w.start();
    this.log.info({ namespace: this.namespace ?? '(all)' }, 'controller started');
  }

  stop(): void {
    for (const w of this.watches) w.stop();
    this.watches = [];
    this.queue.close();
    this.log.info('controller stopped');
  }
}
