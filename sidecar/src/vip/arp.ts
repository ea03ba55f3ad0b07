/**
 * `arp` mode: the master adds VIP/32 to its interface and announces it with
 * gratuitous ARP (a burst: at once, then again, as MetalLB does); a demoted
 * node removes it. Needs NET_ADMIN and NET_RAW (hostNetwork in a cluster).
 * Sending raw ARP is left to iputils' arping: Node has no AF_PACKET sockets.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logger } from '../log.ts';
import type { VipAnnouncer } from './announcer.ts';

const run = promisify(execFile);

export class ArpAnnouncer implements VipAnnouncer {
  private readonly vip: string;
  private readonly iface: string;
  private readonly log: Logger;
  private timers: NodeJS.Timeout[] = [];

  constructor(vip: string, iface: string, log: Logger) {
    this.vip = vip;
    this.iface = iface;
    this.log = log;
  }

  async acquire(): Promise<void> {
    try {
      await run('ip', ['addr', 'add', `${this.vip}/32`, 'dev', this.iface]);
    } catch (err) {
      if (!String((err as { stderr?: string }).stderr).includes('File exists')) throw err;
    }
    // Gratuitous ARP at once and twice more: a lost first announcement must not
    // leave clients on the old MAC.
    this.garp();
    this.timers = [setTimeout(() => this.garp(), 50), setTimeout(() => this.garp(), 500)];
    this.log.info({ vip: this.vip, iface: this.iface }, 'VIP acquired, gratuitous ARP sent');
  }

  async release(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    try {
      await run('ip', ['addr', 'del', `${this.vip}/32`, 'dev', this.iface]);
    } catch (err) {
      if (!String((err as { stderr?: string }).stderr).includes('Cannot assign')) throw err;
    }
    this.log.info({ vip: this.vip }, 'VIP released');
  }

  private garp(): void {
    // -U: unsolicited ARP (sender and target = VIP), -c 1: one frame per call.
    execFile('arping', ['-U', '-c', '1', '-I', this.iface, this.vip], (err) => {
      if (err && (err as { code?: number }).code !== 1) this.log.warn({ err: err.message }, 'arping failed');
    });
  }
}
