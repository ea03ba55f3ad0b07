/**
 * Network-namespace test bed: each host is a netns with one veth into a
 * bridge that lives in a "switch" netns of its own, so ARP and gratuitous
 * ARP are real and the machine's own namespace is left alone. Addresses come
 * from 198.18.0.0/15 only. Every process is started in its own process group
 * and ended by PID; namespaces are deleted on destroy(), on exit and on
 * SIGINT/SIGTERM.
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BED_SUBNET = '198.18.0';

export interface HostSpec {
  readonly name: string;
  /** Last octet inside 198.18.0.0/24. */
  readonly octet: number;
}

export class Host {
  readonly name: string;
  readonly ns: string;
  readonly ip: string;
  readonly iface = 'eth0';
  private readonly bed: NetBed;

  constructor(bed: NetBed, name: string, ns: string, ip: string) {
    this.bed = bed;
    this.name = name;
    this.ns = ns;
    this.ip = ip;
  }

  /** Runs a command in this host and returns its stdout (throws on non-zero exit). */
  run(cmd: string, args: string[], input?: string): string {
    return execFileSync('ip', ['netns', 'exec', this.ns, cmd, ...args], {
      encoding: 'utf8',
      input,
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
  }

  /** Starts a long-running process in this host, in its own process group. */
  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...opts,
      detached: true,
    });
    this.bed.track(child);
    return child;
  }
}

const live = new Set<NetBed>();
let hooksInstalled = false;
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const bed of live) bed.destroySync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const bed of live) bed.destroySync();
      process.exit(130);
    });
  }
}

export class NetBed {
  readonly id: string;
  readonly dir: string;
  readonly hosts = new Map<string, Host>();
  private readonly switchNs: string;
  /** False when the hosts join a bridge someone else made (attach): it stays. */
  private readonly ownsSwitch: boolean;
  private readonly subnet: string;
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(id: string, switchNs: string | null, subnet: string) {
    this.id = id;
    this.switchNs = switchNs ?? `sipha-${id}-sw`;
    this.ownsSwitch = switchNs === null;
    this.subnet = subnet;
    this.dir = mkdtempSync(join(tmpdir(), `sipha-${id}-`));
  }

  static create(specs: HostSpec[]): NetBed {
    return NetBed.make(specs, null, BED_SUBNET);
  }

  /**
   * Hosts on the bridge `br0` of an existing switch namespace (hack/cluster.sh's), in `subnet`
   * (a /24 prefix such as "198.18.8"). destroy() removes these hosts only.
   */
  static attach(switchNs: string, subnet: string, specs: HostSpec[]): NetBed {
    return NetBed.make(specs, switchNs, subnet);
  }

  private static make(specs: HostSpec[], switchNs: string | null, subnet: string): NetBed {
    installExitHooks();
    const bed = new NetBed(randomBytes(3).toString('hex'), switchNs, subnet);
    live.add(bed);
    try {
      bed.build(specs);
    } catch (err) {
      bed.destroySync();
      throw err;
    }
    return bed;
  }

  host(name: string): Host {
    const h = this.hosts.get(name);
    if (h === undefined) throw new Error(`no host ${name} in bed ${this.id}`);
    return h;
  }

  /** A scratch directory for one purpose, removed with the bed. */
  subdir(name: string): string {
    const d = join(this.dir, name);
    mkdirSync(d, { recursive: true });
    return d;
  }

  track(child: ChildProcess): void {
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
  }

  /** Ends a process this bed started (its whole process group), waiting for it. */
  async stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    killGroup(child.pid, signal);
    const timer = setTimeout(() => killGroup(child.pid as number, 'SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
    killGroup(child.pid, 'SIGKILL'); // stragglers left in the group (e.g. forked workers)
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => this.stop(c)));
    this.destroySync();
  }

  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const c of this.children) if (c.pid !== undefined) killGroup(c.pid, 'SIGKILL');
    for (const h of this.hosts.values()) quiet(['netns', 'del', h.ns]);
    if (this.ownsSwitch) quiet(['netns', 'del', this.switchNs]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private build(specs: HostSpec[]): void {
    if (this.ownsSwitch) {
      ip(['netns', 'add', this.switchNs]);
      ip(['-n', this.switchNs, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', this.switchNs, 'link', 'set', 'br0', 'up']);
      ip(['-n', this.switchNs, 'link', 'set', 'lo', 'up']);
    }
    specs.forEach((spec, i) => {
      const ns = `sipha-${this.id}-${spec.name}`;
      const a = `sv${this.id}${i}a`;
      const b = `sv${this.id}${i}b`;
      ip(['netns', 'add', ns]);
      this.hosts.set(spec.name, new Host(this, spec.name, ns, `${this.subnet}.${spec.octet}`));
      ip(['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
      ip(['link', 'set', a, 'netns', ns]);
      ip(['link', 'set', b, 'netns', this.switchNs]);
      ip(['-n', ns, 'link', 'set', a, 'name', 'eth0']);
      ip(['-n', ns, 'addr', 'add', `${this.subnet}.${spec.octet}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', this.switchNs, 'link', 'set', b, 'master', 'br0']);
      ip(['-n', this.switchNs, 'link', 'set', b, 'up']);
    });
  }
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function quiet(args: string[]): void {
  try {
    ip(args);
  } catch {
    // already gone
  }
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group has already exited
  }
}
