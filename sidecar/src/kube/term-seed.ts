/**
 * Terms must never restart: a pair whose two sidecars both restarted would
 * otherwise count from 0 again, reuse terms the operator has already seen
 * (status, Events) and walk into a fence left for an old term. At start the
 * sidecar reads back every term recorded for its pair (both pods' term and
 * fence annotations, the SipHaPair's status.term) and seeds the role machine
 * with the highest (HaNode.seedTerm) before it starts.
 *
 * Bounded: the SIP service must come up even with the API server away, so
 * after `deadlineMs` it starts with what it could read, and says which
 * sources were missing.
 */
import * as k8s from '@kubernetes/client-node';
import { FENCED_ANNOTATION, GROUP, PLURAL, TERM_ANNOTATION, VERSION } from '../../../contract/names.ts';
import { withSignal } from './role-reporter.ts';

/** Both pods of the pair, from this pod's name (<pair>-0 / <pair>-1, a StatefulSet's naming). */
export function pairOf(pod: string): { pair: string; pods: [string, string] } {
  const m = /^(.+)-[01]$/.exec(pod);
  if (!m) throw new Error(`pod ${pod}: expected <pair>-0 or <pair>-1`);
  const pair = m[1] as string;
  return { pair, pods: [`${pair}-0`, `${pair}-1`] };
}

/** The highest term recorded on a pod: its own term, or a fence at a higher one. */
export function recordedTerm(pod: k8s.KubernetesObject | null): number {
  const ann = pod?.metadata?.annotations ?? {};
  const terms = [ann[TERM_ANNOTATION], ann[FENCED_ANNOTATION]].map(Number).filter((t) => Number.isInteger(t) && t >= 0);
  return Math.max(0, ...terms);
}

export interface TermSeed {
  term: number;
  /** Sources not read before the deadline (empty: the seed is complete). */
  missing: string[];
}

export interface SeedOptions {
  deadlineMs?: number;
  attemptTimeoutMs?: number;
  retryMs?: number;
  /** One read failed (it is retried until the deadline). */
  failed?: (source: string, err: unknown) => void;
}

const notFound = (err: unknown) => (err as { code?: number }).code === 404;

export async function readPairTerm(
  kc: k8s.KubeConfig,
  namespace: string,
  pod: string,
  opts: SeedOptions = {},
): Promise<TermSeed> {
  const { pair, pods } = pairOf(pod);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const sources = new Map<string, (signal: AbortSignal) => Promise<number>>([
    ...pods.map((name): [string, (s: AbortSignal) => Promise<number>] => [
      `pod/${name}`,
      async (signal) => recordedTerm(await core.readNamespacedPod({ namespace, name }, withSignal(signal))),
    ]),
    [
      `siphapair/${pair}`,
      async (signal) => {
        const p = (await custom.getNamespacedCustomObject(
          { group: GROUP, version: VERSION, namespace, plural: PLURAL, name: pair },
          withSignal(signal),
        )) as { status?: { term?: number } };
        const t = Number(p.status?.term ?? 0);
        return Number.isInteger(t) && t >= 0 ? t : 0;
      },
    ],
  ]);
  const deadline = Date.now() + (opts.deadlineMs ?? 10_000);
  const attemptTimeout = opts.attemptTimeoutMs ?? 2000;
  let term = 0;
  for (;;) {
    // In parallel: a round takes one attempt timeout at most.
    await Promise.all(
      [...sources].map(async ([source, read]) => {
        const ac = new AbortController();
        const timer = setTimeout(() => ac.abort(new Error(`read timed out after ${attemptTimeout} ms`)), attemptTimeout);
        try {
          const t = await read(ac.signal); // awaited first: `term` is shared by parallel reads
          term = Math.max(term, t);
          sources.delete(source);
        } catch (err) {
          if (notFound(err))
            sources.delete(source); // nothing recorded there
          else opts.failed?.(source, err);
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    if (sources.size === 0 || Date.now() >= deadline) return { term, missing: [...sources.keys()] };
    await new Promise((r) => setTimeout(r, Math.min(opts.retryMs ?? 500, Math.max(0, deadline - Date.now()))));
  }
}
