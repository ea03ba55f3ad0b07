/**
 * One pool of connections to the API server per KubeConfig.
 *
 * client-node 2.0 builds a new undici Agent for every request
 * (`applySecurityAuthentication` -> `createDispatcher`, unlike its cached
 * https.Agent for watches), so every call opened its own TCP + TLS connection
 * and left it idle behind: a Lease claim (a read and a write) paid two
 * handshakes, on a loaded 2-core node a large part of the 500 ms a new master
 * has to confirm its takeover (the cluster e2e, session 14). client-go keeps
 * one transport per config; so does this: the first Agent built for the
 * current cluster and user serves every later request, and the ones built
 * after it are closed unused.
 *
 * Types only from client-node: the sidecar loads it only inside a pod.
 */
import type { KubeConfig } from '@kubernetes/client-node';

type Context = Parameters<KubeConfig['applySecurityAuthentication']>[0];
type Dispatcher = NonNullable<ReturnType<Context['getDispatcher']>>;

const pooled = new WeakSet<KubeConfig>();

/** Makes every API client made from `kc` share one connection pool per (cluster, user). Returns `kc`. */
export function reuseConnections(kc: KubeConfig): KubeConfig {
  if (pooled.has(kc)) return kc;
  pooled.add(kc);
  const apply = kc.applySecurityAuthentication.bind(kc);
  const shared = new Map<string, Dispatcher>();
  kc.applySecurityAuthentication = async (ctx: Context) => {
    await apply(ctx);
    const built = ctx.getDispatcher();
    // Plain http without TLS options: undici's global dispatcher, which pools already.
    if (built === undefined) return;
    const key = JSON.stringify([kc.getCurrentCluster()?.name ?? '', kc.getCurrentUser()?.name ?? '']);
    const pool = shared.get(key);
    if (pool === undefined) {
      shared.set(key, built);
      return;
    }
    ctx.setDispatcher(pool);
    void built.close();
  };
  return kc;
}
