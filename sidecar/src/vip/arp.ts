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

  constructor(vip: string, iface: string, log: Logger) {
    this.vip = vip;
    this.iface = iface;
    this.log = log;
  }

  async reset(): Promise<void> {
    if (await this.remove()) this.log.warn({ vip: this.vip, iface: this.iface }, 'removed a stale VIP left by an earlier start');
  }

  async acquire(): Promise<void> {
    await run('ip', ['addr', 'replace', `${this.vip}/32`, 'dev', this.iface, ...lifetimeArgs()]);
    this.lastRefresh = performance.now();
    this.stopRefresh();
    this.refresher = setInterval(() => this.refresh(), VIP_REFRESH_MS);
    // Gratuitous ARP at once and twice more: a lost first announcement must not
    // leave clients on the old MAC.
    this.garp();
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
    this.lastRefresh = now;
    const ip = this.batch();
    ip.stdin?.write(vipReplaceLine(this.vip, this.iface));
  }

  private batch(): ChildProcess {
    if (this.ip !== null && this.ip.exitCode === null) return this.ip;
    // -force: one failed line must not end the batch.
    const ip = spawn('ip', ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    ip.on('error', (err) => this.log.error({ err }, 'cannot run ip for VIP refreshes'));
    ip.stdin.on('error', (err) => this.log.warn({ err }, 'VIP refresher pipe closed'));
    ip.stderr.on('data', (d: Buffer) => this.log.warn({ stderr: d.toString().trim() }, 'VIP refresh failed'));
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

const lifetimeArgs = () => ['valid_lft', String(VIP_LIFETIME_S), 'preferred_lft', String(VIP_LIFETIME_S)];
