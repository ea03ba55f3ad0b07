/**
 * What `switchover` and `rotate-key` share: a request is an annotation on the
 * SipHaPair, set under an optimistic lock (a request someone else made
 * meanwhile is not overwritten), and the operator's answers are Events on the
 * pair that did not exist before the request.
 */
import * as k8s from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION } from '../../contract/names.ts';
import type { Client } from './client.ts';

export interface PairRequest {
  /** The request already on the pair, if any (then nothing was set). */
  pending: string | undefined;
  /** Events of the pair not seen before (each returned once), oldest first. */
  newEvents(): Promise<k8s.CoreV1Event[]>;
}

export async function requestOnPair(client: Client, pair: string, annotation: string, value: string): Promise<PairRequest> {
  const ns = client.namespace;
  const obj = (await client.custom.getNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: ns,
    plural: PLURAL,
    name: pair,
  })) as { metadata: { resourceVersion?: string; annotations?: Record<string, string> } };
  const selector = `involvedObject.name=${pair},involvedObject.kind=SipHaPair`;
  const list = async () => (await client.core.listNamespacedEvent({ namespace: ns, fieldSelector: selector })).items;
  const seen = new Set((await list()).map((e) => e.metadata?.uid));
  const newEvents = async () => {
    const fresh = (await list())
      .filter((e) => !seen.has(e.metadata?.uid))
      .sort((a, b) => String(a.metadata?.creationTimestamp).localeCompare(String(b.metadata?.creationTimestamp)));
    for (const e of fresh) seen.add(e.metadata?.uid);
    return fresh;
  };
  const pending = obj.metadata.annotations?.[annotation];
  if (pending !== undefined) return { pending, newEvents };
  await client.custom.patchNamespacedCustomObject(
    {
      group: GROUP,
      version: VERSION,
      namespace: ns,
      plural: PLURAL,
      name: pair,
      body: { metadata: { resourceVersion: obj.metadata.resourceVersion, annotations: { [annotation]: value } } },
    },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  return { pending: undefined, newEvents };
}
