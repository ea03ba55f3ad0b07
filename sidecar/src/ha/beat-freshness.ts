/**
 * Which authentic heartbeats count (issue 9 item 1). The HMAC proves a beat
 * came from a holder of the pair's key, not that it is new: a beat recorded
 * during an earlier start of the peer ("resigned", "master at term 57")
 * replayed later would make this side take over or step down. Freshness is a
 * challenge-response folded into the beats (no extra round trip): every beat
 * names the sender's incarnation (ms since the epoch at its start) and echoes
 * the peer incarnation it answers. A beat counts only if
 *   - it echoes our own incarnation: it was made after we started;
 *   - its incarnation is not one we have moved past, nor older than the one
 *     we follow while that one still beats (a replayed earlier start);
 *   - within one incarnation, its beat counter rises (no replay, no reordering);
 *     the latest beat seen again is a 'duplicate' (the same beat by its second
 *     path), told apart so it is not counted as an attack.
 * We echo the incarnation we follow; before we follow one, the newest we have
 * seen (a recording is always older than the live peer's start).
 * Pure: no I/O, no clock. Limits (docs/security.md): beats recorded where we
 * could not hear them (behind a partition) can stand in for a dead peer for
 * as long as the recording lasts; a peer whose clock stepped back across its
 * restart is followed only once its predecessor has gone silent.
 */

export interface BeatIds {
  readonly incarnation: number;
  readonly echo: number;
  readonly beat: number;
}

/** Why an authentic beat did not count. 'unechoed' also covers a peer that just started and has not heard us yet. */
export type StaleReason = 'unechoed' | 'retired' | 'older' | 'old-beat' | 'duplicate';

/** How many replaced peer incarnations are remembered (a peer restarts rarely; the oldest go first). */
const RETIRED_CAP = 64;

export class BeatFreshness {
  private readonly mine: number;
  /** The peer incarnation we follow; 0: none yet. */
  private current = 0;
  private lastBeat = -1;
  /** The newest incarnation seen while we follow none: what we echo to get started. */
  private newest = 0;
  private readonly retired: number[] = [];

  constructor(myIncarnation: number) {
    this.mine = myIncarnation;
  }

  /** The incarnation our beats echo. */
  echo(): number {
    return this.current !== 0 ? this.current : this.newest;
  }

  /**
   * Judges an authentic beat: null when it counts (it is then the latest),
   * else why not. `followedIsSilent`: the incarnation we follow has missed
   * its beats (lost), so an older-looking restart may replace it.
   */
  judge(b: BeatIds, followedIsSilent: boolean): StaleReason | null {
    if (b.incarnation === this.current) {
      if (b.echo !== this.mine) return 'unechoed';
      // The latest beat again: its copy by the other path (UDP and the replication stream).
      if (b.beat === this.lastBeat) return 'duplicate';
      if (b.beat < this.lastBeat) return 'old-beat';
      this.lastBeat = b.beat;
      return null;
    }
    if (this.retired.includes(b.incarnation)) return 'retired';
    if (this.current === 0 && b.incarnation > this.newest) this.newest = b.incarnation;
    if (b.echo !== this.mine) return 'unechoed';
    if (this.current !== 0 && b.incarnation < this.current && !followedIsSilent) return 'older';
    if (this.current !== 0) {
      this.retired.push(this.current);
      if (this.retired.length > RETIRED_CAP) this.retired.shift();
    }
    this.current = b.incarnation;
    this.lastBeat = b.beat;
    return null;
  }
}
