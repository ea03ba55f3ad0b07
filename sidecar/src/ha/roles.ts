/**
 * The role state machine: the ONLY place that decides "became master" or
 * "became backup" (kube-vip's OnStartedLeading/OnStoppedLeading). The VIP,
 * the egress gate, replication and the pod label react to its decisions.
 * Pure: `step(state, event)` returns the next state and why; no I/O, no clock.
 *
 * Terms: every takeover raises the term, and a node only ever claims terms
 * of its own parity (term % 2 === ordinal). Two nodes can therefore never be
 * master in the same term, even when a partition lets both self-elect; when
 * they meet again, the higher term wins.
 *
 * Witness (optional, decision 0005): silence is not evidence that the peer
 * is dead. With a witness, a node that has only silence to go on (a backup
 * that lost the peer's heartbeats, a node alone at start) becomes master only
 * once the witness granted it the lease, and a master whose peer is silent
 * stands down when the witness refuses it or cannot confirm it in time. While
 * the peer is heard the witness is never consulted, so its outage alone
 * changes nothing. Evidence the peer gives itself (its server died, it
 * resigned) still means an immediate takeover.
 */
import type { Role } from '../../../contract/names.ts';

export interface NodeState {
  readonly role: Role;
  readonly term: number;
  /** Highest term seen from anyone (own or peer). */
  readonly seenTerm: number;
  readonly ordinal: 0 | 1;
  /** The ordinal elected when both start ready together (spec.preferredMaster); never a reason to take over later. */
  readonly preferred: 0 | 1;
  readonly serverUp: boolean;
  /** What the peer last said, if it is alive. */
  readonly peer: PeerView | null;
  /** The peer missed a few beats, not enough to count as lost: a master asks the witness already. */
  readonly peerQuiet: boolean;
  /** A witness decides self-elections on silence (decision 0005). */
  readonly witness: boolean;
  /** The start-up grace period ran out with nobody heard: this node may stand alone (with the witness's grant). */
  readonly alone: boolean;
  /**
   * Beats keep coming that fit none of our keys: the peer is alive with another
   * key (decision 0012). Without a witness that silence elects nobody: a node
   * that cannot check its peer must not assume it is dead.
   */
  readonly peerKeyMismatch: boolean;
  /**
   * This node stood down as master only because the witness could not confirm
   * it (witness-unconfirmed): its server is fine and nobody has been master
   * since, so its state is the newest. Set by that resignation, kept while it
   * then waits as `starting` (its peer lost too), cleared by any other role
   * change and by its server going down (a restarted server is empty).
   */
  readonly resumable: boolean;
}

export interface PeerView {
  readonly role: Role;
  readonly term: number;
  readonly serverUp: boolean;
}

export type HaEvent =
  | { type: 'peer'; peer: PeerView }
  | { type: 'peer-lost' }
  /** The peer missed a few beats (fewer than make it lost). */
  | { type: 'peer-quiet' }
  | { type: 'server'; up: boolean }
  /** Nothing heard from the peer within the start-up grace period. */
  | { type: 'startup-timeout' }
  | { type: 'fenced'; term: number }
  /** This master cannot serve after all: taking the VIP or opening the public sockets failed, or the VIP was lost. */
  | { type: 'serve-failed'; reason: string }
  /** Planned switchover: this master has drained and hands over to its in-sync backup. */
  | { type: 'handover' }
  /**
   * The witness's answer to this node's claim, made while the peer was silent.
   * A refusal names the holder's term: only a newer one (a takeover) outranks a master.
   */
  | { type: 'witness'; granted: true }
  | { type: 'witness'; granted: false; holderTerm: number }
  /** A master with a silent peer could not get the witness's confirmation in time (unreachable). */
  | { type: 'witness-lapsed' }
  /** The peer's beats fit none of our keys (mismatch), or no longer come (that ended). */
  | { type: 'peer-key'; mismatch: boolean };

export interface Decision {
  readonly state: NodeState;
  /** Why the role or term changed; null when nothing did. */
  readonly reason: string | null;
}

export function initialState(ordinal: 0 | 1, opts: { preferred?: 0 | 1; witness?: boolean } = {}): NodeState {
  return {
    role: 'starting',
    term: 0,
    seenTerm: 0,
    ordinal,
    preferred: opts.preferred ?? 0,
    serverUp: false,
    peer: null,
    peerQuiet: false,
    witness: opts.witness ?? false,
    alone: false,
    peerKeyMismatch: false,
    resumable: false,
  };
}

/** The term this node would take now (what it claims from the witness before a self-election). */
export function claimTerm(s: NodeState): number {
  return s.role === 'master' ? s.term : nextOwnTerm(s.seenTerm, s.ordinal);
}

/**
 * Is this node asking the witness now? Only while the peer is silent and
 * silence would decide; a master asks already while the peer is quiet, so in
 * a cut both ways it holds the lease before the backup asks.
 */
export function wantsWitness(s: NodeState): boolean {
  if (!s.witness || !s.serverUp) return false;
  if (s.peer !== null) return s.peerQuiet && s.role === 'master';
  return s.role === 'master' || s.role === 'backup' || s.role === 'resigned' || (s.role === 'starting' && s.alone);
}

/** The smallest term above everything seen that belongs to this node. */
export function nextOwnTerm(seen: number, ordinal: 0 | 1): number {
  let t = seen + 1;
  if (t % 2 !== ordinal) t++;
  return t;
}

/** Does a master with (termA, ordinalA) beat one with (termB, ordinalB)? Higher term, then lower ordinal. */
export function outranks(termA: number, ordinalA: number, termB: number, ordinalB: number): boolean {
  return termA > termB || (termA === termB && ordinalA < ordinalB);
}

function become(s: NodeState, role: Role, reason: string, takeTerm = false): Decision {
  const term = takeTerm ? nextOwnTerm(s.seenTerm, s.ordinal) : s.term;
  const resumable =
    (role === 'resigned' && reason === 'witness-unconfirmed') ||
    (role === 'starting' && reason === 'no-master-around' && s.resumable);
  return { state: { ...s, role, term, seenTerm: Math.max(s.seenTerm, term), resumable }, reason };
}

const same = (s: NodeState): Decision => ({ state: s, reason: null });

export function step(s0: NodeState, e: HaEvent): Decision {
  // Every event first updates what we know.
  let s = s0;
  if (e.type === 'peer') s = { ...s, peer: e.peer, peerQuiet: false, seenTerm: Math.max(s.seenTerm, e.peer.term) };
  if (e.type === 'peer-lost') s = { ...s, peer: null, peerQuiet: false };
  if (e.type === 'peer-quiet' && s.peer !== null) s = { ...s, peerQuiet: true };
  if (e.type === 'server') s = { ...s, serverUp: e.up, resumable: s.resumable && e.up };
  if (e.type === 'startup-timeout' && s.peer === null) s = { ...s, alone: true };
  if (e.type === 'peer') s = { ...s, alone: false, peerKeyMismatch: false };
  if (e.type === 'peer-key') s = { ...s, peerKeyMismatch: e.mismatch };
  // Without a witness, silence elects: a peer-lost, the start-up timeout, or the end of a key
  // mismatch (the peer that held another key went quiet too). Never while the peer is heard
  // speaking with a key we cannot check.
  const silenceElects = !s.witness && !s.peerKeyMismatch && (e.type === 'peer-lost' || (e.type === 'peer-key' && !e.mismatch));
  // A grant answers silence: once the peer is heard again it decides nothing.
  const granted = e.type === 'witness' && e.granted && s.peer === null;

  if (e.type === 'fenced') {
    // The operator shut this pod out at `term`: stop serving unless we have moved past it.
    if (s.role === 'master' && e.term >= s.term) return become(s, 'fenced', 'fenced-by-operator');
    return same(s);
  }
  if (e.type === 'serve-failed') return s.role === 'master' ? become(s, 'resigned', e.reason) : same(s);
  if (e.type === 'handover') return s.role === 'master' ? become(s, 'resigned', 'switchover') : same(s);
  // Verdicts reach a master whose peer is silent, or only quiet (it claims ahead of the
  // peer); while the peer is heard they decide nothing.
  if (s.role === 'master' && (s.peer === null || s.peerQuiet)) {
    // A lease left by an older term (the peer held it during an earlier silence) is not a
    // newer master: wait for it to run out (ha-node extends the confirm deadline), do not resign.
    if (e.type === 'witness' && !e.granted && e.holderTerm > s.term) return become(s, 'resigned', 'witness-refused');
    if (e.type === 'witness-lapsed') return become(s, 'resigned', 'witness-unconfirmed');
  }

  switch (s.role) {
    case 'starting': {
      if (!s.serverUp) return same(s);
      const p = s.peer;
      if (p?.role === 'master') return become(s, 'backup', 'peer-is-master');
      // Stood down for want of the witness, then lost the peer too: still the newest state.
      if (resumesOver(s, p)) return become(s, 'master', 'peer-starting', true);
      if (p && !canServe(p)) return become(s, 'master', 'peer-cannot-serve', true);
      if (p) {
        // Both ready: the preferred ordinal becomes the first master.
        return s.ordinal === s.preferred ? become(s, 'master', 'elected', true) : same(s);
      }
      if (!p && s.alone && (s.witness ? granted : silenceElects || (e.type === 'startup-timeout' && !s.peerKeyMismatch))) {
        return become(s, 'master', 'no-peer-at-startup', true);
      }
      return same(s);
    }
    case 'backup': {
      if (!s.serverUp) return become(s, 'resigned', 'server-dead');
      const p = s.peer;
      if (!p && silenceElects) return become(s, 'master', 'peer-heartbeat-lost', true);
      if (granted) return become(s, 'master', 'peer-heartbeat-lost', true);
      if (p && !canServe(p)) return become(s, 'master', whyPeerCannotServe(p), true);
      // A peer that restarted (starting) or waits as backup too: nobody serves.
      if (p && p.role !== 'master') return become(s, 'master', 'peer-not-master', true);
      return same(s);
    }
    case 'master': {
      if (!s.serverUp) return become(s, 'resigned', 'server-dead');
      const p = s.peer;
      if (p?.role === 'master' && outranks(p.term, peerOrdinal(s), s.term, s.ordinal)) {
        return become(s, 'backup', 'higher-term-peer');
      }
      return same(s);
    }
    case 'resigned':
    case 'fenced': {
      // Back in service only as backup of a live master; a fresh election otherwise.
      if (!s.serverUp) return same(s);
      const p = s.peer;
      if (p?.role === 'master') return become(s, 'backup', 'rejoined');
      // A peer that just (re)started holds nothing newer than us when we stood down only for
      // want of the witness: we serve again and it becomes our backup (the burst brings it
      // what we took). It would otherwise take over, seeing us resigned, with what its server
      // held before: the registrations we took since would be gone (a new master that lost the
      // witness while its old master's sidecar restarted; decision 0006). It is evidence, not
      // silence: no witness needed.
      if (resumesOver(s, p)) return become(s, 'master', 'peer-starting', true);
      // Nobody heard and our server is up again: nobody else serves. A fenced
      // node waits for the operator or its peer (the fence is for exactly this).
      if (!p && s.role === 'resigned' && (s.witness ? granted : !s.peerKeyMismatch))
        return become(s, 'master', 'no-master-around', true);
      // A peer that can serve takes over from us (it sees us resigned); only
      // when nobody else can does this node stand for election again.
      if (e.type === 'peer-lost' || (p && !canServe(p))) return become(s, 'starting', 'no-master-around');
      return same(s);
    }
  }
}

/**
 * A node that stood down only for want of the witness serves again over a peer
 * that (re)started and knows no term above ours: the peer advertises the
 * highest term it knows while starting (its seed in a cluster), so one that
 * was master after us (a partition) is not overruled. If the peer takes over
 * meanwhile (it saw us resigned first), it took the next term of its parity
 * above ours, and we take the next of ours, two above: it steps down.
 */
function resumesOver(s: NodeState, p: PeerView | null): boolean {
  return s.resumable && p?.role === 'starting' && p.term <= s.term;
}

function whyPeerCannotServe(p: PeerView): string {
  if (!p.serverUp) return 'peer-server-dead';
  return p.role === 'fenced' ? 'peer-fenced' : 'peer-resigned';
}

/** A peer that could be master: its server is up and it has not stepped down. */
function canServe(p: PeerView): boolean {
  return p.serverUp && p.role !== 'resigned' && p.role !== 'fenced';
}

function peerOrdinal(s: NodeState): 0 | 1 {
  return s.ordinal === 0 ? 1 : 0;
}
