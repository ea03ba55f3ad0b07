/**
 * The local server monitor's second half: a SIP OPTIONS to the local server
 * over the link every `intervalMs`. A server whose process died is seen at
 * once by the link (its sockets close); a server that is alive but hung
 * holds its sockets and is seen here, after `misses` unanswered probes.
 * Probes are never replicated and their answers never leave the pod.
 *
 * A client can put any branch in its request, and Kamailio's reply carries it
 * back through the link: only a branch with this process's random token and
 * the number of a probe actually sent is an answer (issue 9 item 7: a crafted
 * branch used to count as a probe answer and turned hang detection off).
 */
import { randomBytes } from 'node:crypto';
import type { SipMessage } from '../sip/message.ts';

export const PROBE_BRANCH_PREFIX = 'z9hG4bK-sipha-probe-';
/** Probes per channel whose send time is kept (an answer older than that tells no wait). */
const WAIT_KEPT = 16;

export interface ProbeLink {
  /** Traffic connections; the probe's own connection comes on top of them. */
  readonly trafficConnections: number;
  sendOn(index: number, slices: Buffer[]): boolean;
  /** On a connection of the probe's own: nothing written before it delays its answer. */
  sendProbe(slices: Buffer[]): boolean;
  /** When the server last sent anything on traffic connection `index` (performance.now() ms). */
  lastReadAt(index: number): number;
}

/**
 * Hung means, after `misses` probes unanswered: on the probe's own connection,
 * that is all (nothing was written before those probes); on a traffic
 * connection, only if the server also sent nothing else on it for as long,
 * since a probe there waits behind whatever was written first (a state burst
 * is seconds of work, answered all along) while a stuck worker answers
 * nothing at all (test/unit/probe-behind-burst.test.ts).
 */
export class ServerProbe {
  /** Per channel (traffic connections 0..n-1, then the probe's own): probes sent, highest answered. */
  private readonly sent: number[];
  private readonly answered: number[];
  /** When each channel's last WAIT_KEPT probes went out (performance.now() ms), by probe number modulo WAIT_KEPT. */
  private readonly sentAt: number[][];
  /**
   * How long an answered probe waited for its answer, first answer only: on a
   * traffic connection, what the server's backlog there costs every message.
   */
  onWait: ((ms: number, connection: 'traffic' | 'probe') => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private healthy = true;
  private readonly link: ProbeLink;
  private readonly intervalMs: number;
  private readonly misses: number;
  private readonly onHealth: (healthy: boolean) => void;
  /** `${PROBE_BRANCH_PREFIX}<token>-`: unguessable, per process. */
  private readonly branchPrefix = `${PROBE_BRANCH_PREFIX}${randomBytes(12).toString('hex')}-`;

  /** The link token (contract/link.ts), carried like every other message the server gets. */
  private readonly tokenLine: string;

  constructor(
    link: ProbeLink,
    intervalMs: number,
    misses: number,
    onHealth: (healthy: boolean) => void,
    linkToken: string | null = null,
  ) {
    this.tokenLine = linkToken ? `X-Sipha-Token: ${linkToken}\r\n` : '';
    this.link = link;
    this.intervalMs = intervalMs;
    this.misses = misses;
    this.onHealth = onHealth;
    this.sent = new Array<number>(link.trafficConnections + 1).fill(0);
    this.answered = new Array<number>(link.trafficConnections + 1).fill(0);
    this.sentAt = Array.from({ length: link.trafficConnections + 1 }, () => new Array<number>(WAIT_KEPT).fill(0));
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** True when `m` is the answer to one of our probes (it is consumed here). */
  consume(m: SipMessage): boolean {
    const branch = m.topVia.branch;
    if (m.isRequest || branch === undefined || !branch.startsWith(this.branchPrefix)) return false;
    const id = /^(\d{1,3})-(\d{1,15})$/.exec(branch.slice(this.branchPrefix.length));
    if (!id) return false;
    const channel = Number(id[1]);
    const k = Number(id[2]);
    const sent = this.sent[channel];
    if (sent === undefined || k < 1 || k > sent) return false;
    if (k > (this.answered[channel] as number)) {
      // Each probe is answered once; an answer jumping past older probes stands for them.
      this.answered[channel] = k;
      if (this.onWait !== null && sent - k < WAIT_KEPT) {
        const at = (this.sentAt[channel] as number[])[k % WAIT_KEPT] as number;
        this.onWait(performance.now() - at, channel === this.link.trafficConnections ? 'probe' : 'traffic');
      }
    }
    // Back only when no channel is short of answers any more (an answer to an old probe is not enough).
    if (!this.healthy) this.judge();
    return true;
  }

  private judge(): void {
    const hung = this.sent.some((sent, channel) => {
      if (sent - (this.answered[channel] as number) < this.misses) return false;
      if (channel === this.link.trafficConnections) return true;
      return performance.now() - this.link.lastReadAt(channel) >= this.misses * this.intervalMs;
    });
    if (hung === !this.healthy) return;
    this.healthy = !hung;
    this.onHealth(this.healthy);
  }

  private tick(): void {
    this.judge();
    for (let channel = 0; channel < this.sent.length; channel++) {
      const n = (this.sent[channel] as number) + 1;
      this.sent[channel] = n;
      (this.sentAt[channel] as number[])[n % WAIT_KEPT] = performance.now();
      const msg =
        `OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Sipha-Src: tcp:127.0.0.1:1\r\n${this.tokenLine}Via: SIP/2.0/TCP 127.0.0.1:1;branch=${this.branchPrefix}${channel}-${n}\r\n` +
        `From: <sip:sipha-probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\nCall-ID: sipha-probe-${channel}-${n}\r\nCSeq: ${n} OPTIONS\r\n` +
        'Max-Forwards: 1\r\nContent-Length: 0\r\n\r\n';
      const slices = [Buffer.from(msg, 'latin1')];
      if (channel === this.link.trafficConnections) this.link.sendProbe(slices);
      else this.link.sendOn(channel, slices);
    }
  }
}
