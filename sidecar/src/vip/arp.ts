/**
 * `arp` mode: the master adds VIP/32 to its interface and announces it with
 * gratuitous ARP (a burst: at once, then again, as MetalLB does); a demoted
 * node removes it. Needs NET_ADMIN and NET_RAW (hostNetwork in a cluster).
 * Sending raw ARP is left to iputils' arping: Node has no AF_PACKET sockets.
 *
 * The address is added with a short lifetime that the serving master keeps
 * refreshing, so the kernel removes it by itself within about a second of
 * the sidecar's death (kill -9, OOM): a dead sidecar cannot clean up, and a
 * stale VIP on a second host answers ARP and black-holes SIP. A sidecar that
 * starts removes whatever an earlier incarnation left (`reset`).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../log.ts';
import type { VipAnnouncer } from './announcer.ts';

const run = promisify(execFile);

/** Seconds the kernel keeps the VIP without a refresh (it is gone 1-2 s after the last one on Linux 6.x). */
export const VIP_LIFETIME_S = 1;
/** How often the serving master refreshes the lifetime. */
export const VIP_REFRESH_MS = 200;
/**
 * A refresh later than this after the previous one means the event loop
 * stalled long enough for the address to have expired (and the peer may have
 * taken over): the VIP is then reported lost instead of silently re-added.
 */
export const VIP_REFRESH_LATE_MS = VIP_LIFETIME_S * 1000 - VIP_REFRESH_MS;

/** The `ip` batch line that adds the VIP or renews its lifetime (replace is idempotent: no "already assigned"). */
export function vipReplaceLine(vip: string, iface: string, lifetimeS = VIP_LIFETIME_S): string {
  return `addr replace ${vip}/32 dev ${iface} valid_lft ${lifetimeS} preferred_lft ${lifetimeS}\n`;
}

export class ArpAnnouncer implements VipAnnouncer {
  onLost: (reason: string) => void = () => {};
  private readonly vip: string;
  private readonly iface: string;
  private readonly log: Logger;
  private timers: NodeJS.Timeout[] = [];
  private refresher: NodeJS.Timeout | null = null;
  private lastRefresh = 0;
  /** One long-lived `ip -batch -`: a refresh is a line on its stdin, not a process per 200 ms. */
  private ip: ChildProcess | null = null;
  /** The prepared takeover (see prepare()). */
  private kit: ChildProcess | null = null;

  constructor(vip: string, iface: string, log: Logger) {
    this.vip = vip;
    this.iface = iface;
    this.log = log;
  }

  async reset(): Promise<void> {
    if (await this.remove()) this.log.warn({ vip: this.vip, iface: this.iface }, 'removed a stale VIP left by an earlier start');
    this.prepare();
  }

  /**
   * Prepares the next takeover while nothing is at stake: a small shell that
   * waits for one line, then adds the VIP and execs arping. Forking the
   * sidecar itself at takeover (a process with a 100+ MB heap) cost 10-20 ms
   * of the switchover gap; writing a line to a waiting shell costs nothing.
   */
  prepare(): void {
    if (this.kit !== null && this.kit.exitCode === null) return;
    const script = `read go || exit 4; ip addr replace "$1/32" dev "$2" valid_lft ${VIP_LIFETIME_S} preferred_lft ${VIP_LIFETIME_S} || exit 3; echo added; exec arping -U -c 1 -I "$2" "$1"`;
    const kit = spawn('sh', ['-c', script, 'sipha-vip', this.vip, this.iface], { stdio: ['pipe', 'pipe', 'pipe'] });
    // A failed spawn (EMFILE, ENOMEM) has no pipes and emits 'error', never 'exit'.
    kit.on('error', (err) => {
      this.log.error({ err }, 'cannot prepare the VIP takeover');
      if (this.kit === kit) this.kit = null;
    });
    kit.stdin?.on('error', () => {});
    this.kit = kit;
  }

  async acquire(): Promise<void> {
    this.prepare();
    const kit = this.kit as ChildProcess;
    this.kit = null;
    await new Promise<void>((resolve, reject) => {
      let err = '';
      kit.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
      });
      kit.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('added')) resolve();
      });
      kit.on('exit', (code) => {
        // 0 or 1 from arping after "added" (resolved already); 3: ip failed.
        if (code === 3 || code === 4 || code === null) reject(new Error(`VIP add failed (${code}): ${err.trim()}`));
      });
      kit.on('error', (e) => reject(new Error(`VIP add failed: ${e.message}`)));
      if (kit.pid === undefined || !kit.stdin) reject(new Error('VIP add failed: the takeover shell did not start'));
      else kit.stdin.end('go\n');
    });
    setImmediate(() => this.prepare()); // the next takeover's kit
    this.lastRefresh = performance.now();
    this.stopRefresh();
    this.refresher = setInterval(() => this.refresh(), VIP_REFRESH_MS);
    // The kit sent the first gratuitous ARP; twice more: a lost first announcement
    // must not leave clients on the old MAC.
    this.timers = [setTimeout(() => this.garp(), 50), setTimeout(() => this.garp(), 500)];
    this.log.info({ vip: this.vip, iface: this.iface }, 'VIP acquired, gratuitous ARP sent');
  }

  async release(): Promise<void> {
    this.stopRefresh();
    await this.remove();
    this.log.info({ vip: this.vip }, 'VIP released');
  }

  close(): void {
    this.stopRefresh();
    this.ip?.stdin?.end();
    this.ip = null;
    this.kit?.kill();
    this.kit = null;
  }

  private stopRefresh(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    if (this.refresher) clearInterval(this.refresher);
    this.refresher = null;
  }

  private refresh(): void {
    const now = performance.now();
    const late = now - this.lastRefresh;
    if (late > VIP_REFRESH_LATE_MS) {
      this.stopRefresh();
      this.log.error({ vip: this.vip, lateMs: Math.round(late) }, 'VIP lifetime refresh came too late; the address may be gone');
      this.onLost('vip-refresh-late');
      return;
    }
    // Only a refresh that went out counts: one that cannot (ip would not start: EMFILE)
    // runs into the late check above, and the master stands down in time.
    const ip = this.batch();
    if (ip.pid === undefined || !ip.stdin || ip.stdin.destroyed) return;
    ip.stdin.write(vipReplaceLine(this.vip, this.iface));
    this.lastRefresh = now;
  }

  private batch(): ChildProcess {
    if (this.ip !== null && this.ip.exitCode === null) return this.ip;
    // -force: one failed line must not end the batch.
    const ip = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    ip.on('error', (err) => {
      this.log.error({ err }, 'cannot run ip for VIP refreshes');
      if (this.ip === ip) this.ip = null; // spawn again at the next refresh
    });
    ip.stdin?.on('error', (err) => this.log.warn({ err }, 'VIP refresher pipe closed'));
    ip.stderr?.on('data', (d: Buffer) => this.log.warn({ stderr: d.toString().trim() }, 'VIP refresh failed'));
    ip.on('exit', () => {
      if (this.ip === ip) this.ip = null;
    });
    this.ip = ip;
    return ip;
  }

  /** Deletes the VIP from the interface; false when it was not there. */
  private async remove(): Promise<boolean> {
    try {
      await run('ip', ['addr', 'del', `${this.vip}/32`, 'dev', this.iface]);
      return true;
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr);
      if (stderr.includes('Cannot assign') || stderr.includes('Address not found')) return false;
      throw err;
    }
  }

  private garp(): void {
    // -U: unsolicited ARP (sender and target = VIP), -c 1: one frame per call.
    execFile('arping', ['-U', '-c', '1', '-I', this.iface, this.vip], (err) => {
      if (err && (err as { code?: number }).code !== 1) this.log.warn({ err }, 'arping failed');
    });
  }
}
