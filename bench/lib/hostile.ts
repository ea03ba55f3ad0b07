/**
 * Load tools and gauges for the attack bench (bench/attack.ts): the UDP
 * flooder (C, built once per run), the TCP attackers (tcp-attacker.ts), a
 * sampler of both sidecars' roles, and the /proc and netns counters read
 * around each attack. Every figure comes from a tool's own counters; a
 * figure that is absent is an error, never 0.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Host } from '../../test/lib/netbed.ts';
import type { PairNode } from '../../test/lib/pair.ts';
import { watchOutput } from '../../test/lib/procs.ts';
import { parseExposition } from '../../test/lib/prom-text.ts';
import { parseUdpSnmp } from './kernel-drops.ts';

const FLOOD_C = fileURLToPath(new URL('./udp-flood.c', import.meta.url));
const TCP_ATTACKER = fileURLToPath(new URL('./tcp-attacker.ts', import.meta.url));

/** Builds the UDP flooder into a scratch directory; returns its path and a clean-up. */
export function buildUdpFlood(): { bin: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'sipha-udp-flood-'));
  const bin = join(dir, 'udp-flood');
  execFileSync('gcc', ['-O2', '-Wall', '-o', bin, FLOOD_C], { stdio: ['ignore', 'ignore', 'inherit'] });
  return { bin, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface FloodResult {
  sent: number;
  elapsedMs: number;
  errors: number;
  /** The flooder's own rate: sent / its own elapsed time. */
  rate: number;
}

let payloadFiles = 0;

/** Runs the flooder in `host` (the bed tracks and ends it); resolves with its counters. */
export async function udpFlood(
  host: Host,
  bin: string,
  opts: { target: string; port: number; rate: number; maxCount: number; maxSeconds: number; payloads: Buffer[] },
): Promise<FloodResult> {
  const size = opts.payloads[0]?.length ?? 0;
  if (size === 0 || opts.payloads.some((p) => p.length !== size)) throw new Error('payloads must be non-empty and of one size');
  // Beside the binary: removed with it.
  const file = join(dirname(bin), `payload-${++payloadFiles}.bin`);
  writeFileSync(file, Buffer.concat(opts.payloads));
  const child = host.spawn(bin, [
    opts.target,
    String(opts.port),
    String(opts.rate),
    String(opts.maxCount),
    String(opts.maxSeconds),
    file,
    String(size),
  ]);
  const out = watchOutput(child);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const m = /sent (\d+) elapsed_ms (\d+) errors (\d+)/.exec(out.text());
  if (code !== 0 || !m) throw new Error(`udp-flood exited ${code}: ${out.text().slice(-500)}`);
  const sent = Number(m[1]);
  const elapsedMs = Number(m[2]);
  return { sent, elapsedMs, errors: Number(m[3]), rate: sent / (elapsedMs / 1000) };
}

/** Runs tcp-attacker.ts MODE in `host`; resolves with its counters (JSON on its last line). */
export async function tcpAttack(
  host: Host,
  mode: 'edge' | 'pump' | 'garbage',
  target: string,
  port: number,
  seconds: number,
  count: number,
): Promise<Record<string, number>> {
  const child = host.spawn(process.execPath, [TCP_ATTACKER, mode, target, String(port), String(seconds), String(count)]);
  const out = watchOutput(child);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const last = out.text().trim().split('\n').at(-1) ?? '';
  if (code !== 0 || !last.startsWith('{')) throw new Error(`tcp-attacker ${mode} exited ${code}: ${out.text().slice(-800)}`);
  return JSON.parse(last) as Record<string, number>;
}

/** The role a sidecar reports, read without blocking the bench's event loop; 'down' when it does not answer. */
function roleAsync(n: PairNode): Promise<string> {
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', n.host.ns, 'curl', '-s', '-m', '1', 'http://127.0.0.1:9090/metrics'],
      { encoding: 'utf8', maxBuffer: 16 << 20 },
      (err, text) => {
        if (err) return resolve('down');
        try {
          const held = parseExposition(text).samples.find((s) => s.name === 'sipha_role' && s.value === 1);
          resolve(held?.labels.role ?? 'unknown');
        } catch {
          resolve('unknown');
        }
      },
    );
  });
}

/**
 * Samples both sidecars' roles every `everyMs` while an attack runs. A role
 * change is a sample whose role differs from the last known one of that
 * sidecar ('down'/'unknown' samples are counted apart, as missed samples).
 */
export function sampleRoles(nodes: PairNode[], everyMs = 100) {
  const last: string[] = nodes.map(() => '');
  let changes = 0;
  let missed = 0;
  let samples = 0;
  const story: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = Date.now();
      const roles = await Promise.all(nodes.map(roleAsync));
      samples++;
      roles.forEach((r, i) => {
        if (r === 'down' || r === 'unknown') {
          missed++;
          return;
        }
        if (last[i] !== '' && last[i] !== r) {
          changes++;
          story.push(`${new Date(t).toISOString()} ${nodes[i]?.host.name}: ${last[i]} -> ${r}`);
        }
        last[i] = r;
      });
      await new Promise((res) => setTimeout(res, Math.max(0, everyMs - (Date.now() - t))));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { changes, missed, samples, story, roles: [...last] };
    },
  };
}

/** VmRSS and VmHWM (peak) of a process, MiB. */
export function memoryMib(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => {
    const m = new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(s);
    if (!m) throw new Error(`/proc/${pid}/status has no ${k}`);
    return Number(m[1]) / 1024;
  };
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/** The kernel's UDP counters of a bed host's namespace (/proc/net/snmp "Udp:" lines), e.g. RcvbufErrors. */
export function udpSnmp(host: Host): Record<string, number> {
  return parseUdpSnmp(host.run('cat', ['/proc/net/snmp']));
}

/** Runs a command in `host` without blocking the bench's event loop (the role sampler goes on); resolves with its stdout. */
export async function runIn(host: Host, cmd: string, args: string[]): Promise<string> {
  const child = host.spawn(cmd, args);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString('utf8');
  });
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  if (code !== 0) throw new Error(`${cmd} exited ${code} in ${host.name}`);
  return out;
}

/** The UDP payloads to `port` in a capture, in wire order (hex, as tshark prints them). */
export function udpPayloads(path: string, port: number): string[] {
  const out = execFileSync('tshark', ['-r', path, '-n', '-d', `udp.port==${port},data`, '-T', 'fields', '-e', 'data.data'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return out
    .split('\n')
    .map((l) => l.trim().replaceAll(':', ''))
    .filter((l) => l.length > 0);
}

/** The TCP payload sent to `port` in a capture, joined in wire order. */
export function tcpStream(path: string, port: number): Buffer {
  const out = execFileSync(
    'tshark',
    ['-r', path, '-n', '-Y', `tcp.dstport==${port} && tcp.len>0`, '-T', 'fields', '-e', 'tcp.payload'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 256 << 20 },
  );
  return Buffer.concat(
    out
      .split('\n')
      .map((l) => l.trim().replaceAll(':', ''))
      .filter((l) => l.length > 0)
      .map((h) => Buffer.from(h, 'hex')),
  );
}

/**
 * Keeps the log lines of `nodes` that match `keep`, from now until stop(). A
 * tap of its own on the processes' output: the sidecar's kept output is
 * bounded (the oldest goes), so counting in it goes wrong under a flood.
 */
export function tapLogs(nodes: PairNode[], keep: RegExp) {
  const taps = nodes.map((n) => {
    const lines: string[] = [];
    let partial = '';
    const onData = (d: Buffer) => {
      const text = partial + d.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) if (keep.test(l)) lines.push(l);
    };
    n.sidecar.child.stdout?.on('data', onData);
    n.sidecar.child.stderr?.on('data', onData);
    return { n, lines, onData };
  });
  return {
    stop(): string[][] {
      for (const t of taps) {
        t.n.sidecar.child.stdout?.off('data', t.onData);
        t.n.sidecar.child.stderr?.off('data', t.onData);
      }
      return taps.map((t) => t.lines);
    },
  };
}

/** Every sipha_messages_dropped_total series of a sidecar, keyed "path/reason". */
export function dropsByReason(n: PairNode): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of parseExposition(n.sidecar.scrape()).samples)
    if (s.name === 'sipha_messages_dropped_total') out.set(`${s.labels.path}/${s.labels.reason}`, s.value);
  return out;
}

/** What grew between two dropsByReason readings: "path/reason +N" (a series new since `before` counts from 0). */
export function dropsGrown(before: Map<string, number>, after: Map<string, number>): string {
  return [...after]
    .map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const)
    .filter(([, d]) => d > 0)
    .map(([k, d]) => `${k} +${d}`)
    .join(', ');
}

/**
 * Packets the kernel dropped because a CPU's input backlog was full
 * (/proc/net/softnet_stat, second column, summed over CPUs). Host-wide: every
 * bed namespace's veth traffic passes these backlogs, so a flood that fills
 * them drops the pair's own packets too (a partition, on this bed).
 */
export function softnetDrops(): number {
  return readFileSync('/proc/net/softnet_stat', 'utf8')
    .trim()
    .split('\n')
    .reduce((sum, line) => sum + Number.parseInt(line.split(/\s+/)[1] ?? 'x', 16), 0);
}

/** TCP segments retransmitted from a bed host's namespace (/proc/net/snmp Tcp: RetransSegs). */
export function tcpRetransmits(host: Host): number {
  const lines = host
    .run('cat', ['/proc/net/snmp'])
    .split('\n')
    .filter((l) => l.startsWith('Tcp:'));
  const head = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = head.indexOf('RetransSegs');
  if (i < 0 || values[i] === undefined) throw new Error('no Tcp: RetransSegs in /proc/net/snmp');
  return Number(values[i]);
}
