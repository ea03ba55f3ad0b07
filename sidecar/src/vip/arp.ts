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
 *
 * All of it is done by one small shell started with the sidecar (`reset`),
 * a line in and a line out per step: the sidecar never forks itself after
 * its start. A fork copies the page tables of a Node process of 200-300 MB
 * (several ms of its main thread) and the child spends as long again tearing
 * them down; at a takeover that was ~25 ms of CPU in the very window where the
 * new master's first messages wait (perf on the test cluster, session 18).
 * One shell also keeps the steps in order: a renewal can never land after
 * the release's removal.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Logger } from '../log.ts';
import type { VipAnnouncer } from './announcer.ts';

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
/** A step the helper has not answered by then is failed, and the helper replaced. */
const VIP_STEP_TIMEOUT_MS = 3000;

/**
 * The helper: one line per step, one line back. `add` answers before its
 * gratuitous ARP goes out (the address is what the takeover waits for);
 * `renew` is the lifetime refresh. arping runs in the background: it sends
 * its frame at once but then waits a second for replies that never come to
 * an unsolicited ARP, and the steps behind it (a renewal, the release) must
 * not wait with it. An error is said on one line (globbing off, the
 * message's words re-joined by `echo $e`).
 */
const HELPER_SCRIPT = `set -f
v=$1 d=$2 l=$3
while read -r step; do
  case $step in
    add|renew)
      if e=$(ip addr replace "$v/32" dev "$d" valid_lft "$l" preferred_lft "$l" 2>&1); then echo ok; else echo "err $(echo $e)"; fi
      if [ "$step" = add ]; then arping -U -c 1 -I "$d" "$v" >/dev/null 2>&1 & fi ;;
    del)
      if e=$(ip addr del "$v/32" dev "$d" 2>&1); then echo ok; else echo "err $(echo $e)"; fi ;;
    garp)
      arping -U -c 1 -I "$d" "$v" >/dev/null 2>&1 &
      echo ok ;;
    *) echo "err unknown step $step" ;;
  esac
done`;

type Step = 'add' | 'renew' | 'del' | 'garp';

/** The running helper shell and the steps it has not answered yet (it answers in order). */
class Helper {
  readonly child: ChildProcess;
  private readonly waiting: Array<{ resolve: (line: string) => void; reject: (err: Error) => void }> = [];
  private partial = '';
  private ended: Error | null = null;

  constructor(vip: string, iface: string, onEnd: (err: Error) => void) {
    this.child = spawn('sh', ['-c', HELPER_SCRIPT, 'sipha-vip', vip, iface, String(VIP_LIFETIME_S)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stdout?.setEncoding('utf8');
    this.child.stdout?.on('data', (d: string) => {
      const lines = (this.partial + d).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) this.waiting.shift()?.resolve(line);
    });
    this.child.stderr?.resume();
    this.child.stdin?.on('error', () => {}); // the exit below says it
    // A failed spawn (EMFILE, ENOMEM) has no pipes and emits 'error', never 'exit'.
    this.child.on('error', (err) => this.end(new Error(`the VIP helper did not start: ${err.message}`), onEnd));
    this.child.on('exit', (code, signal) => this.end(new Error(`the VIP helper exited (${signal ?? code})`), onEnd));
  }

  get alive(): boolean {
    return this.ended === null;
  }

  /** Sends one step; its answer, or an error when the helper ends or takes longer than VIP_STEP_TIMEOUT_MS. */
  step(step: Step): Promise<string> {
    if (this.ended !== null) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // Answers come in order: one that is late holds every later one. Start afresh.
        this.child.kill('SIGKILL');
        reject(new Error(`the VIP helper did not answer "${step}" in ${VIP_STEP_TIMEOUT_MS} ms`));
      }, VIP_STEP_TIMEOUT_MS);
      this.waiting.push({
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      });
      this.child.stdin?.write(`${step}\n`);
    });
  }

  close(): void {
    this.child.stdin?.end(); // the loop ends at end of input
  }

  private end(err: Error, onEnd: (err: Error) => void): void {
    if (this.ended !== null) return;
    this.ended = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
    onEnd(err);
  }
}

export class ArpAnnouncer implements VipAnnouncer {
  onLost: (reason: string) => void = () => {};
  private readonly vip: string;
  private readonly iface: string;
  private readonly log: Logger;
  private timers: NodeJS.Timeout[] = [];
  private refresher: NodeJS.Timeout | null = null;
  private lastRefresh = 0;
  private current: Helper | null = null;
  private closed = false;

  constructor(vip: string, iface: string, log: Logger) {
    this.vip = vip;
    this.iface = iface;
    this.log = log;
  }

  /** Starts the helper (the one fork, while nothing is at stake) and removes a stale VIP. */
  async reset(): Promise<void> {
    if (await this.remove()) this.log.warn({ vip: this.vip, iface: this.iface }, 'removed a stale VIP left by an earlier start');
  }

  async acquire(): Promise<void> {
    const answer = await this.helper().step('add');
    if (answer !== 'ok') throw new Error(`VIP add failed: ${answer.replace(/^err /, '')}`);
    this.lastRefresh = performance.now();
    this.stopRefresh();
    this.refresher = setInterval(() => this.refresh(), VIP_REFRESH_MS);
    // The helper sends the first gratuitous ARP right after the add; twice more: a lost
    // first announcement must not leave clients on the old MAC.
    this.timers = [setTimeout(() => this.garp(), 50), setTimeout(() => this.garp(), 500)];
    this.log.info({ vip: this.vip, iface: this.iface }, 'VIP acquired, gratuitous ARP sent');
  }

  async release(): Promise<void> {
    this.stopRefresh();
    // Behind any renewal or announcement already sent: the same helper, in order.
    await this.remove();
    this.log.info({ vip: this.vip }, 'VIP released');
  }

  close(): void {
    this.closed = true;
    this.stopRefresh();
    this.current?.close();
    this.current = null;
  }

  /** The running helper, started again if it ended (that one start is a fork, logged). */
  private helper(): Helper {
    if (this.current?.alive) return this.current;
    const h = new Helper(this.vip, this.iface, (err) => {
      if (this.current === h) this.current = null;
      if (!this.closed) this.log.warn({ err }, 'VIP helper ended; the next step starts another');
    });
    this.current = h;
    return h;
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
    // Only a refresh that went out counts: one that cannot (no helper: EMFILE) runs
    // into the late check above, and the master stands down in time.
    const h = this.helper();
    if (!h.alive || h.child.pid === undefined || !h.child.stdin || h.child.stdin.destroyed) return;
    this.lastRefresh = now;
    h.step('renew').then(
      (answer) => {
        if (answer !== 'ok') this.log.warn({ answer }, 'VIP refresh failed');
      },
      (err) => this.log.warn({ err }, 'VIP refresh failed'),
    );
  }

  /** Deletes the VIP from the interface; false when it was not there. */
  private async remove(): Promise<boolean> {
    const answer = await this.helper().step('del');
    if (answer === 'ok') return true;
    if (answer.includes('Cannot assign') || answer.includes('Address not found')) return false;
    throw new Error(`VIP removal failed: ${answer.replace(/^err /, '')}`);
  }

  private garp(): void {
    this.helper()
      .step('garp')
      .catch((err) => this.log.warn({ err }, 'gratuitous ARP failed'));
  }
}
