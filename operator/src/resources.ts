/**
 * Requests and limits of the pair's two containers. Absent from the spec,
 * the defaults hold requests equal to limits for CPU and memory in both
 * containers, which makes the pods Guaranteed: the last evicted under memory
 * pressure, and never the first OOM victim on the node. The figures behind
 * them are in docs/decisions/0008-rbac-resources.md (bench/out/resources.json).
 */
import type { ContainerResources } from '../../contract/siphapair.ts';

export const DEFAULT_RESOURCES = {
  // Kamailio as the example runs it (-m 64 -M 8 by default, 14 processes): at most
  // 64 + 14 x 8 = 176 MiB of pools plus ~20 MiB of binaries; measured 38 MiB at 1000
  // registrations + calls. Raise with -m / -M.
  sipServer: { requests: { cpu: '500m', memory: '256Mi' }, limits: { cpu: '500m', memory: '256Mi' } },
  // Measured 162 MiB RSS at 1000 registrations + calls, 223 MiB at 11k; Node's heap limit
  // under a 512 MiB cgroup is 259 MiB, so V8 collects before the kernel kills.
  // A whole CPU: the limit is a CFS quota that pauses every thread of the container, the
  // heartbeat thread too, once the period's share is spent. At 500m the sidecars were paused
  // 50-60 ms of each 100 ms period after a (re)start and during state bursts on the test
  // cluster (cpu.stat, session 15), and the peer counted a live node lost (100 ms).
  sidecar: { requests: { cpu: '1', memory: '512Mi' }, limits: { cpu: '1', memory: '512Mi' } },
} as const satisfies Record<string, ContainerResources>;

/** What the spec says, or the default as a whole: a partial spec is the user's choice, never mixed with ours. */
export function containerResources(given: ContainerResources | undefined, fallback: ContainerResources): ContainerResources {
  const pick = given ?? fallback;
  return {
    ...(pick.requests ? { requests: { ...pick.requests } } : {}),
    ...(pick.limits ? { limits: { ...pick.limits } } : {}),
  };
}
