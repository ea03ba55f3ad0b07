/**
 * The claim loop between a node and its witness (decision 0005): while the
 * peer is silent and silence would decide (roles.wantsWitness), claim the
 * witness lease at the term this node holds or would take, and turn each
 * verdict into a role event. A master that has neither its peer nor a grant
 * within the confirm time stands down (`witness-lapsed`); one refused over a
 * lease its peer took at an older term waits for that lease to run out.
 *
 * A master starts earlier than its peer: once the peer is quiet (a few beats
 * missed, before it counts as lost) it claims, so in a cut both ways it holds
 * the lease before the backup asks and the backup is refused (before, whoever
 * asked first won, and a master that lost the race served until its next
 * claim was refused). Its confirm time counts from the last beat heard and
 * ends before the backup's first claim can be sent, so a master cut off from
 * the witness too has stopped serving before a grant can reach the backup.
 *
 * A node that could not reach the witness was likely cut off itself, so its
 * view of the peer's silence is stale too: when the witness answers again, its
 * grant counts only after one more heartbeat-loss period of silence. Without
 * that, a backup whose isolation ends sees the grant before the master's next
 * heartbeat and takes over from a healthy master (with a stale state).
 */
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { afterPendingIo } from './after-pending-io.ts';
import { claimTerm, type HaEvent, type NodeState, wantsWitness } from './roles.ts';
import type { Witness } from './witness.ts';

export interface WitnessTiming {
  /** Claims repeat this often while the peer is silent. */
  renewMs: number;
  /**
   * A master with a silent peer and no grant this long after the last beat heard
   * stands down. Safe only below (misses - 1) x interval (config.ts enforces it).
   */
  confirmMs: number;
  /** How long silence must last to mean a lost peer (heartbeat interval x misses). */
  listenMs: number;
  /** A master renews this often while `holdWhile` says so, its peer heard or not; 0: never. */
  holdRenewMs?: number;
}

/**
 * One poll more at most before a late stand-down: the main thread's poll may
 * hold many SIP messages, and a cut-off master must not serve much longer.
 */
const LAPSE_STALL_RETRIES = 1;

/** Room for the claim made once a stale lease ran out (a Lease round trip, with margin). */
const STALE_SLACK_MS = 250;

/** A master holding a lease stands down this long before its end: room for a late timer. */
const LEASE_GUARD_MS = 40;

export class WitnessClaims {
  private timer: NodeJS.Timeout | null = null;
  private inFlight = false;
  /** When the claim in flight (or the last one) was sent (performance.now() ms). */
  private sentAt = 0;
  /** Our lease runs until then (performance.now() ms); 0: none. */
  private validUntil = 0;
  /**
   * The end of the last lease granted to this node as master. Once it stands down it claims
   * nothing until then (with slack): its claim would renew that lease (the arbiter keeps a
   * holder's lease whatever its role now) and make it master again beside a peer that took
   * over on evidence (a resignation it saw), without a grant (review, session 12).
   */
  private masterLeaseUntil = 0;
  /** When the peer was last heard before this silence (performance.now() ms). */
  private silentSince = performance.now();
  /** When this node last became master (performance.now() ms). */
  private masterSince = 0;
  /** This silence began as a quiet spell (silentSince is from then). */
  private quiet = false;
  /** Fires at the confirm deadline: the 20 ms claim loop alone would overshoot it. */
  private lapseTimer: NodeJS.Timeout | null = null;
  /** A lease left by an older term blocks our claims until then (performance.now() ms). */
  private staleUntil = 0;
  /** The last claim found the witness unreachable: this node may have been the one cut off. */
  private wasCutOff = false;
  /** A grant counts from then on (performance.now() ms): silence heard since the witness came back. */
  private listenUntil = 0;
  private stopped = false;
  private holdTimer: NodeJS.Timeout | null = null;
  /**
   * While true, a master keeps the witness lease even while its peer is heard
   * (HaNode: the backup is not in sync). A backup that is not in sync cannot
   * take over before that lease runs out, so a quiet spell of a backup taking
   * its state burst leaves the master the lease's remaining time (a ttl
   * renewed every holdRenewMs) instead of the confirm deadline's few tens of
   * ms (the soak: hand-backs, witness-unconfirmed, 14-22 s after a failover).
   * Once the backup is in sync the lease runs out by itself within a ttl: a
   * takeover in that window waits for it, as one during the burst does.
   */
  holdWhile: () => boolean = () => false;
  private readonly witness: Witness;
  private readonly timing: WitnessTiming;
  private readonly state: () => NodeState;
  private readonly dispatch: (e: HaEvent) => void;
  private readonly metrics: Metrics;
  private readonly log: Logger;

  constructor(
    witness: Witness,
    timing: WitnessTiming,
    state: () => NodeState,
    dispatch: (e: HaEvent) => void,
    metrics: Metrics,
    log: Logger,
  ) {
    this.witness = witness;
    this.timing = timing;
    this.state = state;
    this.dispatch = dispatch;
    this.metrics = metrics;
    this.log = log;
  }

  start(): void {
    this.silentSince = performance.now();
    this.timer = setInterval(() => this.ask(), this.timing.renewMs);
    this.timer.unref();
    if (this.timing.holdRenewMs) {
      this.holdTimer = setInterval(() => this.hold(), this.timing.holdRenewMs);
      this.holdTimer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.holdTimer) clearInterval(this.holdTimer);
    if (this.lapseTimer) clearTimeout(this.lapseTimer);
    this.witness.close();
  }

  /**
   * The peer missed a few beats, or says it has missed ours (the role machine
   * knows both as peerQuiet): a master claims now. `heardAt`: when the worker
   * last heard it, or when it last heard us, on this
   * thread's performance.now() clock (not a duration: a busy main thread that
   * reads the message late must not move the deadline later too).
   */
  peerQuiet(heardAt: number): void {
    // Within one spell the earliest counts: the peer that stopped hearing us first (a loss one
    // way) may claim from then on, whatever we heard from it since.
    this.silentSince = this.quiet ? Math.min(this.silentSince, heardAt) : heardAt;
    this.quiet = true;
    this.ask();
  }

  /** The peer's heartbeats just stopped (last heard at `heardAt`): ask at once (a takeover waits for this answer). */
  peerLost(heardAt = performance.now()): void {
    if (!this.quiet) this.silentSince = heardAt;
    this.quiet = false;
    // We heard the peer until now: our own inputs worked, so a grant counts at once.
    this.wasCutOff = false;
    this.listenUntil = 0;
    this.ask();
  }

  /** This node just became master: if silence decides, it claims now, and its confirm time starts now. */
  becameMaster(): void {
    this.masterSince = performance.now();
    this.ask();
  }

  /** The peer is heard: a quiet spell is over, its deadline too. */
  peerHeard(): void {
    this.quiet = false;
    if (this.lapseTimer) clearTimeout(this.lapseTimer);
    this.lapseTimer = null;
  }

  /**
   * A master past its confirm deadline stands down (true); otherwise the check is set for that deadline.
   * Not at once unless `final`: this thread may be reading a backlog, and the peer's next beat (the
   * worker's next message) may be right behind the one that brought us here (the soak bench: a new
   * master busy with 2,750 messages/s read a late 'peer-quiet' and handed the pair back). The verdict
   * is taken again after pending I/O, one poll more if that came late too.
   */
  private lapsed(s: NodeState, final = false): boolean {
    if (s.role !== 'master' || !wantsWitness(s)) return false;
    // A guard before the lease's end: validUntil counts from the claim's send, the peer is
    // granted once the arbiter's lease ran out; the guard is room for this timer being late.
    const leaseBy = this.validUntil - LEASE_GUARD_MS;
    // A node that became master during the silence (on evidence: the peer resigned while it
    // could not hear us) gets its confirm time from then: it had no reason to claim before,
    // and must claim before it is judged (it stood down at once, without a claim, and
    // nobody served: review of session 14).
    const since = Math.max(this.silentSince, this.masterSince);
    const confirmBy = Math.max(leaseBy, since + this.timing.confirmMs, this.staleUntil);
    if (performance.now() < confirmBy) {
      this.armLapse(confirmBy);
      return false;
    }
    if (final) {
      // How long the witness has kept us waiting: the story of a stand-down on a slow API server.
      const now = performance.now();
      this.log.warn(
        {
          confirmMs: this.timing.confirmMs,
          sinceSilentMs: Math.round(now - since),
          claimInFlightMs: this.inFlight ? Math.round(now - this.sentAt) : null,
        },
        'no grant from the witness within the confirm time: standing down',
      );
      this.dispatch({ type: 'witness-lapsed' });
    } else this.lapseAfterPendingIo();
    return true;
  }

  private lapseAfterPendingIo(): void {
    if (this.lapseTimer) clearTimeout(this.lapseTimer);
    this.lapseTimer = null;
    afterPendingIo(() => {
      if (!this.stopped) this.lapsed(this.state(), true);
    }, LAPSE_STALL_RETRIES);
  }

  ask(): void {
    const s = this.state();
    if (!wantsWitness(s) || this.lapsed(s)) return;
    if (
      s.role !== 'master' &&
      this.masterLeaseUntil > 0 &&
      performance.now() < this.masterLeaseUntil + 2 * this.timing.renewMs + STALE_SLACK_MS
    )
      return;
    this.claim(s);
  }

  /** A master whose peer is heard renews its lease while holdWhile() (silence has its own loop). */
  private hold(): void {
    const s = this.state();
    if (s.role !== 'master' || !s.witness || !s.serverUp || wantsWitness(s) || !this.holdWhile()) return;
    this.claim(s);
  }

  private claim(s: NodeState): void {
    if (this.inFlight) return;
    this.inFlight = true;
    const term = claimTerm(s);
    this.sentAt = performance.now();
    void this.witness.claim(term).then((v) => {
      this.inFlight = false;
      this.metrics.witnessClaims.inc({ verdict: v.verdict });
      this.metrics.witnessClaimSeconds.observe({ verdict: v.verdict }, (performance.now() - this.sentAt) / 1000);
      const now = this.state();
      // A grant to this master at its term is its lease, asked in silence or to hold it.
      if (v.verdict === 'granted' && now.role === 'master' && claimTerm(now) === term) {
        this.validUntil = v.validUntil;
        this.masterLeaseUntil = v.validUntil;
      }
      if (!wantsWitness(now) || claimTerm(now) !== term) return; // the peer spoke, or things moved on
      if (v.verdict !== 'unreachable' && this.wasCutOff) {
        this.wasCutOff = false;
        if (now.role !== 'master') {
          this.listenUntil = performance.now() + this.timing.listenMs;
          this.log.warn(
            { listenMs: this.timing.listenMs },
            'the witness answers again: listening for the peer before a grant counts',
          );
        }
      }
      if (v.verdict === 'granted') {
        this.validUntil = v.validUntil;
        this.lapsed(now);
        if (performance.now() < this.listenUntil) return;
        this.dispatch({ type: 'witness', granted: true });
      } else if (v.verdict === 'refused') {
        this.log.warn({ term, holder: v.holder, holderTerm: v.holderTerm }, 'the witness refused this node');
        // Wait for it to run out, then claim once more: the deadline leaves room for that claim's
        // round trip (a Lease write: tens of ms). Without the slack the master stood down at the
        // instant the stale lease expired, just before its next claim would have been granted.
        if (v.holderTerm < term) this.staleUntil = performance.now() + v.remainingMs + 2 * this.timing.renewMs + STALE_SLACK_MS;
        this.dispatch({ type: 'witness', granted: false, holderTerm: v.holderTerm });
      } else {
        this.wasCutOff = true;
        this.log.debug({ reason: v.reason, err: v.err }, 'witness unreachable');
      }
    });
  }

  /**
   * Checks again at `at` (performance.now() ms): a master must stand down on time, not at the next loop.
   * The check itself waits for this loop turn's I/O: a timer runs before the loop reads its messages,
   * so a thread that was busy past the deadline would otherwise stand down with the peer's next beat
   * (the heartbeat worker's message) waiting unread (the soak bench: a pair flapping under load).
   */
  private armLapse(at: number): void {
    if (this.lapseTimer) clearTimeout(this.lapseTimer);
    this.lapseTimer = setTimeout(
      () => {
        this.lapseTimer = null;
        this.lapseAfterPendingIo();
      },
      Math.max(0, at - performance.now()),
    );
    this.lapseTimer.unref();
  }
}
