/** Kubernetes Events on a SipHaPair, so `kubectl describe shp` tells the story. */
import type { CoreV1Event } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { API_VERSION, KIND } from '../../contract/names.ts';
import type { SipHaPair } from '../../contract/siphapair.ts';
import type { Kube } from './kube.ts';

export class EventRecorder {
  private readonly kube: Kube;
  private readonly log: Logger;
  private readonly component: string;

  constructor(kube: Kube, log: Logger, component = 'sipha-operator') {
    this.kube = kube;
    this.log = log;
    this.component = component;
  }

  async record(pair: SipHaPair, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    const body: CoreV1Event = {
      metadata: { generateName: `${pair.metadata.name}.`, namespace: pair.metadata.namespace },
      involvedObject: {
        apiVersion: API_VERSION,
        kind: KIND,
        name: pair.metadata.name,
        namespace: pair.metadata.namespace,
        uid: pair.metadata.uid,
      },
      type,
      reason,
      message,
      source: { component: this.component },
      reportingComponent: this.component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.kube.core.createNamespacedEvent({ namespace: pair.metadata.namespace, body });
    } catch (err) {
      // An event is a courtesy: never fail a reconcile for it.
      this.log.warn({ err: (err as Error).message, reason }, 'could not record event');
    }
    this.log.info({ pair: `${pair.metadata.namespace}/${pair.metadata.name}`, type, reason }, message);
  }
}
