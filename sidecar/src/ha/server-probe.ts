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

export interface ProbeLink {
  /** On a connection of the probe's own: behind a burst the server is busy, not hung. */
  sendProbe(slices: Buffer[]): boolean;
}

export class ServerProbe {
  private n = 0;
  private answered = 0;
  private sent = 0;
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
    const digits = branch.slice(this.branchPrefix.length);
    const k = Number(digits);
    if (!/^\d{1,15}$/.test(digits) || k < 1 || k > this.sent) return false;
    if (k > this.answered) this.answered = k;
    // An answer to an old probe, with newer ones still out as many as make a hang, is not recovery yet.
    if (!this.healthy && this.sent - this.answered < this.misses) {
      this.healthy = true;
      this.onHealth(true);
    }
    return true;
  }

  private tick(): void {
    if (this.healthy && this.sent - this.answered >= this.misses) {
      this.healthy = false;
      this.onHealth(false);
    }
    this.n++;
    this.sent = this.n;
    const msg =
      `OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Sipha-Src: tcp:127.0.0.1:1\r\n${this.tokenLine}Via: SIP/2.0/TCP 127.0.0.1:1;branch=${this.branchPrefix}${this.n}\r\n` +
      `From: <sip:sipha-probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\nCall-ID: sipha-probe-${this.n}\r\nCSeq: ${this.n} OPTIONS\r\n` +
      'Max-Forwards: 1\r\nContent-Length: 0\r\n\r\n';
    this.link.sendProbe([Buffer.from(msg, 'latin1')]);
  }
}
