/**
 * The cluster connection the way kubectl makes it: --kubeconfig, else
 * $KUBECONFIG (a list of files, the first current-context wins), else
 * ~/.kube/config; --context picks a context; the namespace is --namespace,
 * else the context's, else "default".
 */
import * as k8s from '@kubernetes/client-node';
import { UsageError } from './args.ts';

export interface Client {
  kc: k8s.KubeConfig;
  namespace: string;
  core: k8s.CoreV1Api;
  custom: k8s.CustomObjectsApi;
}

export function connect(opts: {
  kubeconfig: string | undefined;
  context: string | undefined;
  namespace: string | undefined;
}): Client {
  const kc = new k8s.KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault(undefined, true);
  if (opts.context) {
    if (!kc.getContextObject(opts.context)) throw new UsageError(`context "${opts.context}" does not exist`);
    kc.setCurrentContext(opts.context);
  }
  if (!kc.getCurrentCluster()) throw new UsageError('no cluster configured (kubeconfig, --kubeconfig or --context)');
  const namespace = opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  return { kc, namespace, core: kc.makeApiClient(k8s.CoreV1Api), custom: kc.makeApiClient(k8s.CustomObjectsApi) };
}

/** The API server's own words for a failed call (the body's message), else the error's. */
export function apiMessage(err: unknown): string {
  const e = err as { body?: unknown; message?: string; code?: number };
  if (typeof e.body === 'string') {
    try {
      const parsed = JSON.parse(e.body) as { message?: string };
      if (parsed.message) return parsed.message;
    } catch {}
  }
  return e.message ?? String(err);
}

export function isNotFound(err: unknown): boolean {
  return (err as { code?: number }).code === 404;
}
