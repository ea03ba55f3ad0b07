/**
 * `kubectl sipha rotate-key NAME`: asks the operator for a key rotation (the
 * sipha.io/rotate-key annotation on the SipHaPair, decision 0012) and follows
 * it: each KeyRotation* Event is printed as it comes (each step waits for the
 * kubelets to rewrite the mounted Secret on both nodes: a minute or two on a
 * default kubelet), KeyRotated ends it (exit 0), KeyRotationBlocked or the
 * timeout exit 1. Only Events that did not exist before the request count.
 */
import * as k8s from '@kubernetes/client-node';
import { GROUP, PLURAL, ROTATE_KEY_ANNOTATION, VERSION } from '../../contract/names.ts';
import type { Client } from './client.ts';

export interface RotationResult {
  ok: boolean;
  message: string;
}

export async function rotateKey(
  client: Client,
  pair: string,
  timeoutMs: number,
  progress: (line: string) => void,
  now: () => Date = () => new Date(),
): Promise<RotationResult> {
  const ns = client.namespace;
  const obj = (await client.custom.getNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: ns,
    plural: PLURAL,
    name: pair,
  })) as { metadata: { resourceVersion?: string; annotations?: Record<string, string> } };
  const pending = obj.metadata.annotations?.[ROTATE_KEY_ANNOTATION];
  if (pending !== undefined) return { ok: false, message: `a key rotation (${pending}) is already under way; wait for it` };

  const selector = `involvedObject.name=${pair},involvedObject.kind=SipHaPair`;
  const events = async () => (await client.core.listNamespacedEvent({ namespace: ns, fieldSelector: selector })).items;
  const seen = new Set((await events()).map((e) => e.metadata?.uid));
  const request = now().toISOString();
  // Optimistic lock: a request made by someone else meanwhile is not overwritten.
  await client.custom.patchNamespacedCustomObject(
    {
      group: GROUP,
      version: VERSION,
      namespace: ns,
      plural: PLURAL,
      name: pair,
      body: { metadata: { resourceVersion: obj.metadata.resourceVersion, annotations: { [ROTATE_KEY_ANNOTATION]: request } } },
    },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  progress(`asked for key rotation ${request}`);
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const fresh = (await events())
      .filter((e) => !seen.has(e.metadata?.uid) && (e.reason ?? '').startsWith('Key'))
      .sort((a, b) => String(a.metadata?.creationTimestamp).localeCompare(String(b.metadata?.creationTimestamp)));
    for (const e of fresh) {
      seen.add(e.metadata?.uid);
      if (e.reason === 'KeyRotated') return { ok: true, message: `${e.reason}: ${e.message ?? ''}` };
      if (e.reason === 'KeyRotationBlocked') return { ok: false, message: `${e.reason}: ${e.message ?? ''}` };
      progress(`${e.reason}: ${e.message ?? ''}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return {
    ok: false,
    message: `the rotation did not end within ${timeoutMs / 1000} s; it goes on (kubectl describe shp ${pair} shows each step)`,
  };
}
