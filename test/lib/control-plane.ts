/**
 * A real Kubernetes control plane for tests: etcd, kube-apiserver and
 * kube-controller-manager built from Go modules by hack/build-k8s.sh (cached
 * outside the repo), started on loopback with generated keys and a token
 * kubeconfig. Each suite gets its own, and stop() ends every process it
 * started (by PID) and removes its files. No kubelet or scheduler: pods are
 * created by the StatefulSet controller and stay Pending.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './free-port.ts';
import { until, watchOutput } from './procs.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface ControlPlane {
  readonly kubeconfig: string;
  readonly bin: string;
  readonly dir: string;
  readonly server: string;
  kubectl(args: string[], input?: string): string;
  /** kubectl that does not throw: exit code, stdout and stderr. */
  kubectlTry(args: string[], input?: string): { code: number; out: string; err: string };
  /** Stops kube-apiserver only (etcd keeps the data): clients see connection refused. */
  stopApiServer(): Promise<void>;
  /** Starts it again on the same port and waits until it is ready. */
  startApiServer(): Promise<void>;
  stop(): Promise<void>;
}

/** hack/build-k8s.sh's bin directory once `part` is built (it waits for a build under way). */
function builtBinDir(part: 'helm' | 'control-plane'): string {
  const out = execFileSync('bash', [join(ROOT, 'hack/build-k8s.sh'), part], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return out.trim().split('\n').pop() as string;
}

/** The directory with kube-apiserver, kube-controller-manager, kubectl, etcd and helm (the node binaries may still be building). */
export function k8sBinDir(): string {
  return builtBinDir('control-plane');
}

/** helm, which hack/build-k8s.sh builds first (an integration test needs it, long before the rest is built). */
export function helmBinary(): string {
  return join(builtBinDir('helm'), 'helm');
}

export async function startControlPlane(opts: { controllerManager?: boolean } = {}): Promise<ControlPlane> {
  const bin = k8sBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'sipha-cp-'));
  const children: ChildProcess[] = [];
  const end = async (c: ChildProcess) => {
    if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      try {
        process.kill(c.pid, 'SIGTERM');
      } catch {}
      const t = setTimeout(() => {
        try {
          process.kill(c.pid as number, 'SIGKILL');
        } catch {}
      }, 5000);
      await exited;
      clearTimeout(t);
    }
  };
  const stop = async () => {
    for (const c of [...children].reverse()) await end(c);
    rmSync(dir, { recursive: true, force: true });
  };
  const exitHook = () => {
    for (const c of children)
      if (c.pid && c.exitCode === null)
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {}
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', exitHook);

  try {
    const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
    const token = randomBytes(24).toString('hex');
    writeFileSync(join(dir, 'tokens.csv'), `${token},sipha-admin,sipha-admin,"system:masters"\n`);
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    mkdirSync(join(dir, 'certs'));

    const start = (name: string, args: string[]) => {
      const c = spawn(join(bin, name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(c);
      return { child: c, out: watchOutput(c) };
    };

    const etcd = start('etcd', [
      '--name',
      'sipha-test',
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${etcdClient}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${etcdPeer}`,
      '--initial-cluster',
      `sipha-test=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level',
      'warn',
    ]);
    await until(
      async () => {
        if (etcd.child.exitCode !== null) throw new Error(`etcd exited:\n${etcd.out.text().slice(-3000)}`);
        try {
          const r = await fetch(`http://127.0.0.1:${etcdClient}/health`);
          return r.ok && ((await r.json()) as { health?: string }).health === 'true';
        } catch {
          return false;
        }
      },
      30000,
      'etcd /health',
    );

    const apiArgs = [
      '--etcd-servers',
      `http://127.0.0.1:${etcdClient}`,
      '--bind-address',
      '127.0.0.1',
      '--advertise-address',
      '127.0.0.1',
      '--secure-port',
      String(apiPort),
      '--cert-dir',
      join(dir, 'certs'),
      '--token-auth-file',
      join(dir, 'tokens.csv'),
      '--authorization-mode',
      'RBAC',
      '--service-account-issuer',
      'https://kubernetes.default.svc',
      '--service-account-key-file',
      join(dir, 'sa.pub'),
      '--service-account-signing-key-file',
      join(dir, 'sa.key'),
      // ClusterIPs are only allocated here, never used: a benchmarking range.
      '--service-cluster-ip-range',
      '198.19.0.0/16',
      '--allow-privileged=true',
      '--v=0',
    ];
    let api = start('kube-apiserver', apiArgs);
    const server = `https://127.0.0.1:${apiPort}`;
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        `- name: sipha-test\n  cluster:\n    server: ${server}\n    insecure-skip-tls-verify: true`,
        'users:',
        `- name: sipha-admin\n  user:\n    token: ${token}`,
        'contexts:',
        '- name: sipha-test\n  context:\n    cluster: sipha-test\n    user: sipha-admin\n    namespace: default',
        'current-context: sipha-test',
        '',
      ].join('\n'),
    );
    const kubectlTry = (args: string[], input?: string) => {
      try {
        const out = execFileSync(join(bin, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], {
          encoding: 'utf8',
          input,
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        return { code: 0, out, err: '' };
      } catch (e) {
        const err = e as { status?: number; stdout?: string; stderr?: string };
        return { code: err.status ?? 1, out: err.stdout ?? '', err: err.stderr ?? '' };
      }
    };
    const apiReady = () =>
      until(
        () => {
          if (api.child.exitCode !== null) throw new Error(`kube-apiserver exited:\n${api.out.text().slice(-3000)}`);
          return kubectlTry(['get', '--raw', '/readyz']).out.trim() === 'ok';
        },
        90000,
        'kube-apiserver /readyz',
      );
    await apiReady();
    if (opts.controllerManager !== false) {
      const kcm = start('kube-controller-manager', [
        '--kubeconfig',
        kubeconfig,
        '--leader-elect=false',
        '--service-account-private-key-file',
        join(dir, 'sa.key'),
        '--use-service-account-credentials=false',
        '--controllers',
        '*,-serviceaccount-token',
        '--bind-address',
        '127.0.0.1',
        '--secure-port',
        '0',
        '--concurrent-gc-syncs',
        '5',
        '--v=0',
      ]);
      await until(
        () => {
          if (kcm.child.exitCode !== null) throw new Error(`kube-controller-manager exited:\n${kcm.out.text().slice(-3000)}`);
          return kubectlTry(['get', 'serviceaccount', 'default']).code === 0;
        },
        60000,
        'kube-controller-manager creates the default ServiceAccount',
      );
    }
    return {
      kubeconfig,
      bin,
      dir,
      server,
      kubectlTry,
      stopApiServer: () => end(api.child),
      startApiServer: async () => {
        if (api.child.exitCode === null && api.child.signalCode === null) return;
        api = start('kube-apiserver', apiArgs);
        await apiReady();
      },
      kubectl: (args, input) => {
        const r = kubectlTry(args, input);
        if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.err}`);
        return r.out;
      },
      stop: async () => {
        process.off('exit', exitHook);
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
