/** The sipha operator and the sidecar's role reporter as real processes against a test control plane. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ControlPlane } from './control-plane.ts';
import { until, watchOutput } from './procs.ts';

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
  metric(name: string): Promise<number>;
}

export async function startOperator(
  cp: ControlPlane,
  opts: { identity: string; metricsPort: number; leaseDurationS?: number; leaderElect?: boolean; leaseNamespace?: string },
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
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const p = proc(child);
  const metric = async (name: string) => {
    const r = await fetch(`http://127.0.0.1:${opts.metricsPort}/metrics`);
    const text = await r.text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(' ')[1]) : Number.NaN;
  };
  await until(
    async () => {
      if (child.exitCode !== null) throw new Error(`operator exited:\n${p.output()}`);
      try {
        return Number.isFinite(await metric('sipha_operator_leader'));
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
  /** Sends "role term reason [gap]" and waits for the patch to be made. */
  report(role: string, term: number, reason: string, gapMs?: number): Promise<void>;
}

export function startReporter(cp: ControlPlane, namespace: string, pod: string): Reporter {
  const child = spawn(process.execPath, [REPORTER], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, KUBECONFIG: cp.kubeconfig, SIPHA_POD_NAME: pod, SIPHA_POD_NAMESPACE: namespace },
  });
  const p = proc(child);
  return {
    ...p,
    report: async (role, term, reason, gapMs) => {
      const before = (p.output().match(/^reported /gm) ?? []).length;
      child.stdin?.write(`${role} ${term} ${reason}${gapMs !== undefined ? ` ${gapMs}` : ''}\n`);
      await until(
        () => {
          if (/^error: /m.test(p.output())) throw new Error(`reporter: ${p.output()}`);
          return (p.output().match(/^reported /gm) ?? []).length > before;
        },
        10000,
        `reporter ${pod} reports ${role}`,
      );
    },
  };
}
