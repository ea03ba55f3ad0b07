/**
 * `kubectl sipha rotate-key NAME`: asks the operator for a key rotation (the
 * sipha.io/rotate-key annotation on the SipHaPair, decision 0012) and follows
 * it: each KeyRotation* Event is printed as it comes (each step waits for the
 * kubelets to rewrite the mounted Secret on both nodes: a minute or two on a
 * default kubelet), KeyRotated ends it (exit 0), KeyRotationBlocked or the
 * timeout exit 1. Only Events that did not exist before the request count.
 */
import { ROTATE_KEY_ANNOTATION } from '../../contract/names.ts';
import type { Client } from './client.ts';
import { requestOnPair } from './pair-request.ts';

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
  const request = now().toISOString();
  const req = await requestOnPair(client, pair, ROTATE_KEY_ANNOTATION, request);
  if (req.pending !== undefined)
    return { ok: false, message: `a key rotation (${req.pending}) is already under way; wait for it` };
  progress(`asked for key rotation ${request}`);
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const fresh = (await req.newEvents()).filter((e) => (e.reason ?? '').startsWith('Key'));
    for (const e of fresh) {
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
