/** The sipha operator and the sidecar's role reporter as real processes against a test control plane. */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ControlPlane } from './control-plane.ts';
import { until, watchOutput } from './procs.ts';
import { readMetric } from './prom-text.ts';

const OPERATOR = fileURLToPath(new URL('../../operator/src/main.ts', import.meta.url));
const REPORTER = fileURLToPath(new URL('../../sidecar/src/kube/reporter-main.ts', import.meta.url));

export interface Proc {
  child: ChildProcess;
  output: () => string;
  waitFor: (re: RegExp, ms: number) => Promise<void>;
  stop: (signal?: NodeJS.Signals) => Promise<void>;
}

function proc(child: ChildProcess): Proc {
  const out = watchOutput(child);
  return {
    child,
    output: out.text,
    waitFor: out.waitFor,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    },
  };
}

export interface Operator extends Proc {
  readonly metricsPort: number;
  /** One series of /metrics; rejects when it is absent (never NaN or 0 for "not found"). */
  metric(name: string): Promise<number>;
}

export async function startOperator(
  cp: ControlPlane,
  opts: {
    identity: string;
    metricsPort: number;
    leaseDurationS?: number;
    leaderElect?: boolean;
    leaseNamespace?: string;
    /** More flags, e.g. --allowed-vip-ranges=... */
    args?: string[];
  },
): Promise<Operator> {
  const child = spawn(
    process.execPath,
    [
      OPERATOR,
      '--kubeconfig',
      cp.kubeconfig,
      '--identity',
      opts.identity,
      '--metrics-port',
      String(opts.metricsPort),
      '--lease-duration',
      String(opts.leaseDurationS ?? 3),
      '--leader-elect',
      String(opts.leaderElect ?? true),
      '--log-level',
      'info',
      '--lease-namespace',
      opts.leaseNamespace ?? 'default',
      ...(opts.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const p = proc(child);
  const metric = async (name: string) => {
    const r = await fetch(`http://127.0.0.1:${opts.metricsPort}/metrics`);
    return readMetric(await r.text(), name);
  };
  await until(
    async () => {
      if (child.exitCode !== null) throw new Error(`operator exited:\n${p.output()}`);
      try {
        await metric('sipha_operator_leader');
        return true;
      } catch {
        return false;
      }
    },
    20000,
    'operator metrics endpoint',
  );
  return { ...p, metricsPort: opts.metricsPort, metric };
}

export interface Reporter extends Proc {
  /** Sends "role term reason [gap]" and waits for the patch to be made; rejects on the first failed attempt. */
  report(role: string, term: number, reason: string, gapMs?: number): Promise<void>;
  /** Sends a report without waiting (the reporter retries it until it lands). */
  send(role: string, term: number, reason: string): void;
}

/**
 * The sidecar's Kubernetes side as a process (sidecar/src/kube/reporter-main.ts):
 * role reports on stdin; "seeded term", "reported", "error:" and "fenced" lines out.
 */
export function startReporter(cp: ControlPlane, namespace: string, pod: string, env: Record<string, string> = {}): Reporter {
  const child = spawn(process.execPath, [REPORTER], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, KUBECONFIG: cp.kubeconfig, SIPHA_POD_NAME: pod, SIPHA_POD_NAMESPACE: namespace, ...env },
  });
  const p = proc(child);
  const send = (role: string, term: number, reason: string, gapMs?: number) => {
    child.stdin?.write(`${role} ${term} ${reason}${gapMs !== undefined ? ` ${gapMs}` : ''}\n`);
  };
  return {
    ...p,
    send,
    report: async (role, term, reason, gapMs) => {
      const from = p.output().length;
      send(role, term, reason, gapMs);
      const fresh = () => p.output().slice(from);
      await until(
        () => {
          if (/^error: /m.test(fresh())) throw new Error(`reporter: ${fresh()}`);
          return new RegExp(`^reported ${role} ${term}$`, 'm').test(fresh());
        },
        15000,
        `reporter ${pod} reports ${role}`,
      );
    },
  };
}

/** A kubeconfig that authenticates as a ServiceAccount (TokenRequest API). */
export function kubeconfigFor(cp: ControlPlane, namespace: string, sa: string): string {
  const token = cp.kubectl(['create', 'token', sa, '-n', namespace, '--duration=1h']).trim();
  const path = join(cp.dir, `kubeconfig-${namespace}-${sa}`);
  writeFileSync(
    path,
    `apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: ${cp.server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: ${token}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: ${namespace}\ncurrent-context: x\n`,
  );
  return path;
}
