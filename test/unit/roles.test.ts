/**
 * The role state machine: every transition, and a property test that no
 * sequence of events, delivered to two nodes in any interleaving and with any
 * losses, ever makes both master in the same term.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  claimTerm,
  type HaEvent,
  initialState,
  type NodeState,
  nextOwnTerm,
  outranks,
  step,
  wantsWitness,
} from '../../sidecar/src/ha/roles.ts';

const up = (s: NodeState) => step(s, { type: 'server', up: true }).state;
const master = (ordinal: 0 | 1, term: number): NodeState => ({
  ...initialState(ordinal),
  role: 'master',
  term,
  seenTerm: term,
  serverUp: true,
});
const backup = (ordinal: 0 | 1, term: number): NodeState => ({
  ...initialState(ordinal),
  role: 'backup',
  term,
  seenTerm: term,
  serverUp: true,
});

describe('role state machine: transitions', () => {
  it('terms are per-node parity, strictly rising', () => {
    assert.equal(nextOwnTerm(0, 0), 2);
    assert.equal(nextOwnTerm(0, 1), 1);
    assert.equal(nextOwnTerm(7, 1), 9);
    assert.equal(nextOwnTerm(7, 0), 8);
    assert.ok(outranks(3, 1, 2, 0));
    assert.ok(outranks(2, 0, 2, 1));
  });

  it('starting: waits for its own server, then follows a live master', () => {
    const s = initialState(1);
    assert.equal(step(s, { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } }).state.role, 'starting');
    const d = step(up(s), { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } });
    assert.equal(d.state.role, 'backup');
    assert.equal(d.reason, 'peer-is-master');
  });

  it('starting: of two ready nodes the lower ordinal becomes master', () => {
    const peer = { role: 'starting' as const, term: 0, serverUp: true };
    const a = step(up(initialState(0)), { type: 'peer', peer });
    assert.equal(a.state.role, 'master');
    assert.equal(a.state.term, 2);
    assert.equal(a.reason, 'elected');
    assert.equal(step(up(initialState(1)), { type: 'peer', peer }).state.role, 'starting');
  });

  it('starting: alone after the grace period, becomes master', () => {
    const d = step(up(initialState(1)), { type: 'startup-timeout' });
    assert.equal(d.state.role, 'master');
    assert.equal(d.reason, 'no-peer-at-startup');
  });

  it('backup: takes over on lost heartbeats or a peer whose server died, with a higher term', () => {
    const lost = step(backup(1, 2), { type: 'peer-lost' });
    assert.deepEqual([lost.state.role, lost.state.term, lost.reason], ['master', 3, 'peer-heartbeat-lost']);
    const dead = step(backup(1, 2), { type: 'peer', peer: { role: 'resigned', term: 2, serverUp: false } });
    assert.deepEqual([dead.state.role, dead.state.term, dead.reason], ['master', 3, 'peer-server-dead']);
  });

  it('backup: never takes over while the master is healthy and heard', () => {
    const d = step(backup(1, 2), { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } });
    assert.equal(d.state.role, 'backup');
    assert.equal(d.reason, null);
  });

  it('backup or master whose server dies resigns', () => {
    assert.equal(step(backup(1, 2), { type: 'server', up: false }).state.role, 'resigned');
    const d = step(master(0, 2), { type: 'server', up: false });
    assert.deepEqual([d.state.role, d.reason], ['resigned', 'server-dead']);
  });

  it('master: demotes to a higher-term master after a partition heals, keeps the lead otherwise', () => {
    const d = step(master(0, 2), { type: 'peer', peer: { role: 'master', term: 3, serverUp: true } });
    assert.deepEqual([d.state.role, d.reason], ['backup', 'higher-term-peer']);
    assert.equal(step(master(1, 3), { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } }).state.role, 'master');
  });

  it('master: fenced by the operator at its term stops; a stale fence is ignored', () => {
    assert.equal(step(master(0, 2), { type: 'fenced', term: 2 }).state.role, 'fenced');
    assert.equal(step(master(0, 4), { type: 'fenced', term: 2 }).state.role, 'master');
  });

  it('resigned: rejoins as backup of a live master once its server is back', () => {
    const r: NodeState = { ...master(0, 2), role: 'resigned', serverUp: false };
    assert.equal(step(r, { type: 'peer', peer: { role: 'master', term: 3, serverUp: true } }).state.role, 'resigned');
    const back = step({ ...r, serverUp: true }, { type: 'peer', peer: { role: 'master', term: 3, serverUp: true } });
    assert.deepEqual([back.state.role, back.reason], ['backup', 'rejoined']);
  });
});

describe('role state machine: faults around the happy path (issue 8)', () => {
  it('a master that cannot take the VIP or open its sockets resigns with the reason (item 6)', () => {
    const d = step(master(0, 2), { type: 'serve-failed', reason: 'vip-acquire-failed' });
    assert.deepEqual([d.state.role, d.reason], ['resigned', 'vip-acquire-failed']);
    assert.equal(step(backup(1, 2), { type: 'serve-failed', reason: 'x' }).reason, null);
  });

  it('resigned: leaves the takeover to a peer that can serve, stands again only when nobody can', () => {
    const r: NodeState = { ...master(0, 2), role: 'resigned' };
    const healthy = step(r, { type: 'peer', peer: { role: 'backup', term: 2, serverUp: true } });
    assert.deepEqual([healthy.state.role, healthy.reason], ['resigned', null]);
    const stuck = step(r, { type: 'peer', peer: { role: 'resigned', term: 2, serverUp: true } });
    assert.deepEqual([stuck.state.role, stuck.reason], ['starting', 'no-master-around']);
  });

  it('backup: a peer that restarted (starting) means nobody serves: take over', () => {
    const d = step(backup(0, 3), { type: 'peer', peer: { role: 'starting', term: 0, serverUp: true } });
    assert.deepEqual([d.state.role, d.reason], ['master', 'peer-not-master']);
  });

  it('switchover: a master hands over (resigns), its backup takes over, and the old master rejoins as backup', () => {
    const m = step(master(0, 2), { type: 'handover' });
    assert.deepEqual([m.state.role, m.reason], ['resigned', 'switchover']);
    const b = step(backup(1, 2), { type: 'peer', peer: { role: 'resigned', term: 2, serverUp: true } });
    assert.deepEqual([b.state.role, b.state.term, b.reason], ['master', 3, 'peer-resigned']);
    const back = step(m.state, { type: 'peer', peer: { role: 'master', term: 3, serverUp: true } });
    assert.deepEqual([back.state.role, back.reason], ['backup', 'rejoined']);
    assert.equal(step(backup(1, 2), { type: 'handover' }).reason, null, 'only a master hands over');
  });

  it('preferredMaster: the preferred ordinal is elected when both start ready (item 9)', () => {
    const peer = { role: 'starting' as const, term: 0, serverUp: true };
    assert.equal(step(up(initialState(1, { preferred: 1 })), { type: 'peer', peer }).state.role, 'master');
    assert.equal(step(up(initialState(0, { preferred: 1 })), { type: 'peer', peer }).state.role, 'starting');
  });
});

describe('role state machine: the witness decides on silence (item 5)', () => {
  const w = (s: NodeState): NodeState => ({ ...s, witness: true });
  const granted: HaEvent = { type: 'witness', granted: true };
  const refused: HaEvent = { type: 'witness', granted: false, holderTerm: 99 };

  it('a backup that loses the peer claims first and takes over only when granted', () => {
    const lost = step(w(backup(1, 2)), { type: 'peer-lost' });
    assert.deepEqual([lost.state.role, lost.reason], ['backup', null]);
    assert.ok(wantsWitness(lost.state));
    assert.equal(claimTerm(lost.state), 3);
    assert.equal(step(lost.state, refused).state.role, 'backup');
    const d = step(lost.state, granted);
    assert.deepEqual([d.state.role, d.state.term, d.reason], ['master', 3, 'peer-heartbeat-lost']);
  });

  it('evidence from the peer itself needs no witness: its server died, it resigned', () => {
    const d = step(w(backup(1, 2)), { type: 'peer', peer: { role: 'resigned', term: 2, serverUp: false } });
    assert.deepEqual([d.state.role, d.reason], ['master', 'peer-server-dead']);
  });

  it('a master with a silent peer stands down when refused or unconfirmed; never while the peer is heard', () => {
    const lost = step(w(master(0, 2)), { type: 'peer-lost' }).state;
    assert.equal(lost.role, 'master');
    assert.deepEqual(step(lost, refused).reason, 'witness-refused');
    // A lease the peer took at an older term (during an earlier silence) is stale, not a newer master.
    assert.equal(step(lost, { type: 'witness', granted: false, holderTerm: 1 }).state.role, 'master');
    assert.deepEqual(step(lost, { type: 'witness-lapsed' }).reason, 'witness-unconfirmed');
    const heard = step(lost, { type: 'peer', peer: { role: 'backup', term: 2, serverUp: true } }).state;
    assert.equal(step(heard, { type: 'witness-lapsed' }).state.role, 'master');
    assert.equal(wantsWitness(heard), false, 'the witness is not asked while heartbeats flow');
  });

  it('a quiet peer (beats missed, not yet lost): the master asks the witness and obeys it; a backup waits', () => {
    const heard = (s: NodeState, role: 'master' | 'backup'): NodeState => ({ ...w(s), peer: { role, term: 2, serverUp: true } });
    assert.equal(wantsWitness(heard(master(0, 2), 'backup')), false);
    const quiet = step(heard(master(0, 2), 'backup'), { type: 'peer-quiet' }).state;
    assert.equal(quiet.role, 'master');
    assert.ok(wantsWitness(quiet), 'the master claims ahead of the backup');
    assert.equal(step(quiet, refused).reason, 'witness-refused');
    assert.equal(step(quiet, { type: 'witness-lapsed' }).reason, 'witness-unconfirmed');
    const back = step(quiet, { type: 'peer', peer: { role: 'backup', term: 2, serverUp: true } }).state;
    assert.equal(wantsWitness(back), false, 'heard again: no more claims');
    assert.equal(step(back, { type: 'witness-lapsed' }).state.role, 'master');
    const b = step(heard(backup(1, 2), 'master'), { type: 'peer-quiet' }).state;
    assert.equal(wantsWitness(b), false, 'a backup asks only once the master is lost');
    assert.equal(step(b, granted).state.role, 'backup');
  });

  it('alone at start: master only with a grant; a grant that arrives after the peer spoke decides nothing', () => {
    const alone = step(w(up(initialState(1))), { type: 'startup-timeout' }).state;
    assert.equal(alone.role, 'starting');
    assert.ok(wantsWitness(alone));
    assert.equal(step(alone, granted).state.role, 'master');
    const heard = step(alone, { type: 'peer', peer: { role: 'backup', term: 2, serverUp: true } }).state;
    assert.equal(step(heard, granted).reason, null);
  });

  it('a master that stood down for want of the witness serves again when its peer restarts, instead of the restarted peer with older state', () => {
    // Found as pods (session 13): the new master lost the witness while its old master's sidecar
    // restarted; the restarted sidecar saw it resigned and took over with what its server held.
    const lost = step(w(master(1, 3)), { type: 'peer-lost' }).state;
    const resigned = step(lost, { type: 'witness-lapsed' }).state;
    assert.deepEqual([resigned.role, resigned.resumable], ['resigned', true]);
    const starting = { role: 'starting' as const, term: 0, serverUp: true };
    const d = step(resigned, { type: 'peer', peer: starting });
    assert.deepEqual([d.state.role, d.state.term, d.reason], ['master', 5, 'peer-starting']);
    // The restarted peer, if it saw us resigned first, took over at 4: it yields to 5.
    const raced = step(up(initialState(0, { witness: true })), {
      type: 'peer',
      peer: { role: 'resigned', term: 3, serverUp: true },
    });
    assert.deepEqual([raced.state.role, raced.state.term], ['master', 4]);
    assert.equal(step(raced.state, { type: 'peer', peer: { role: 'master', term: 5, serverUp: true } }).state.role, 'backup');
    // Not when the peer knows a term above ours (it was master after us: its state may be newer) ...
    assert.equal(step(resigned, { type: 'peer', peer: { ...starting, term: 4 } }).state.role, 'resigned');
    // ... nor after any other resignation: one that could not serve (serve-failed), or refused
    // by the witness (the peer held the lease: it was master after us).
    const failed = step(w(master(1, 3)), { type: 'serve-failed', reason: 'vip-acquire-failed' }).state;
    assert.equal(failed.resumable, false);
    assert.equal(step(failed, { type: 'peer', peer: starting }).state.role, 'resigned');
    const refused = step(lost, { type: 'witness', granted: false, holderTerm: 4 }).state;
    assert.deepEqual([refused.role, refused.resumable], ['resigned', false]);
    assert.equal(step(refused, { type: 'peer', peer: starting }).state.role, 'resigned');
    // Any role change after the resignation ends it.
    const rejoined = step(resigned, { type: 'peer', peer: { role: 'master', term: 4, serverUp: true } }).state;
    assert.deepEqual([rejoined.role, rejoined.resumable], ['backup', false]);
  });

  it('resuming over a restarted peer: only with the newest state (review, session 13)', () => {
    const resigned = step(step(w(master(1, 3)), { type: 'peer-lost' }).state, { type: 'witness-lapsed' }).state;
    const starting = (term: number) => ({ type: 'peer' as const, peer: { role: 'starting' as const, term, serverUp: true } });
    // A restarted peer advertises the highest term it knows (its seed): ours is no reason to wait.
    assert.equal(step(resigned, starting(3)).reason, 'peer-starting');
    // One above ours: it was master after us (behind a partition), its state may be newer.
    assert.equal(step(resigned, starting(4)).state.role, 'resigned');
    // Our server restarted meanwhile: it is empty, no longer the newest.
    const emptied = step(step(resigned, { type: 'server', up: false }).state, { type: 'server', up: true }).state;
    assert.equal(emptied.resumable, false);
    assert.notEqual(step(emptied, starting(0)).reason, 'peer-starting');
    // Stood down while the peer was only quiet, then lost it too (the usual order with a UDP
    // witness): waiting as starting, it still resumes over the restarted peer.
    const quiet = step(w({ ...master(1, 3), peer: { role: 'backup', term: 3, serverUp: true } }), { type: 'peer-quiet' }).state;
    const lapsed = step(quiet, { type: 'witness-lapsed' }).state;
    const waiting = step(lapsed, { type: 'peer-lost' }).state;
    assert.deepEqual([waiting.role, waiting.resumable], ['starting', true]);
    const d = step(waiting, starting(3));
    assert.deepEqual([d.state.role, d.state.term, d.reason], ['master', 5, 'peer-starting']);
  });

  it('a resigned node whose server is back and who hears nobody serves again (with a grant, when a witness is set)', () => {
    const r: NodeState = { ...master(0, 2), role: 'resigned', peer: null };
    assert.deepEqual(step(r, { type: 'server', up: true }).state.role, 'master');
    assert.equal(step(w(r), { type: 'server', up: true }).state.role, 'resigned');
    assert.equal(step(w(r), granted).state.role, 'master');
    const f: NodeState = { ...r, role: 'fenced' };
    assert.equal(step(f, { type: 'server', up: true }).state.role, 'fenced', 'a fence holds while the peer is silent');
  });
});

/** A random fault for node 0 or 1 (`tell` delivers the other node's current view, a heartbeat). */
type FaultKind = 'tell' | 'quiet' | 'lost' | 'startup-timeout' | 'server' | 'fenced' | 'serve-failed' | 'witness' | 'key';
type Fault = { node: 0 | 1; kind: FaultKind; up: boolean; term: number; granted: boolean; holderTerm: number };
const faults = (...kinds: FaultKind[]) =>
  fc.record({
    node: fc.constantFrom<0 | 1>(0, 1),
    kind: fc.constantFrom(...kinds),
    up: fc.boolean(),
    term: fc.nat({ max: 12 }),
    granted: fc.boolean(),
    holderTerm: fc.nat({ max: 12 }),
  });

/** The role-machine event a fault is, for a node whose peer is `other`. */
function asEvent(e: Fault, other: NodeState): HaEvent {
  switch (e.kind) {
    case 'tell':
      return { type: 'peer', peer: { role: other.role, term: other.term, serverUp: other.serverUp } };
    case 'quiet':
      return { type: 'peer-quiet' };
    case 'lost':
      return { type: 'peer-lost' };
    case 'server':
      return { type: 'server', up: e.up };
    case 'fenced':
      return { type: 'fenced', term: e.term };
    case 'serve-failed':
      return { type: 'serve-failed', reason: 'test' };
    case 'witness':
      return e.granted ? { type: 'witness', granted: true } : { type: 'witness', granted: false, holderTerm: e.holderTerm };
    case 'key':
      return { type: 'peer-key', mismatch: e.up };
    default:
      return { type: 'startup-timeout' };
  }
}

describe('role state machine: a peer heard with another key (decision 0012)', () => {
  const mismatch = (s: NodeState) => step(s, { type: 'peer-key', mismatch: true }).state;
  it('without a witness, a node alone at start does not elect itself while the mismatch lasts; it does once it ends', () => {
    let s = mismatch(up(initialState(1)));
    s = step(s, { type: 'startup-timeout' }).state;
    assert.equal(s.role, 'starting', 'the peer is alive with another key: silence proves nothing');
    const d = step(s, { type: 'peer-key', mismatch: false });
    assert.equal(d.state.role, 'master', 'the other side went quiet too: now silence elects');
  });
  it('a backup that loses a master it cannot check does not take over; a master stays master', () => {
    let b = step(backup(1, 2), { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } }).state;
    b = mismatch(b);
    b = step(b, { type: 'peer-lost' }).state;
    assert.equal(b.role, 'backup');
    let m = mismatch(master(0, 2));
    m = step(m, { type: 'peer-lost' }).state;
    assert.equal(m.role, 'master');
  });
  it('with a witness the witness decides, as for any silence', () => {
    let s = mismatch(up(initialState(1, { witness: true })));
    s = step(s, { type: 'startup-timeout' }).state;
    assert.equal(s.role, 'starting');
    assert.equal(step(s, { type: 'witness', granted: true }).state.role, 'master');
  });
  it('a valid beat ends the mismatch', () => {
    const s = step(mismatch(up(initialState(1))), { type: 'peer', peer: { role: 'master', term: 2, serverUp: true } }).state;
    assert.equal(s.peerKeyMismatch, false);
    assert.equal(s.role, 'backup');
  });
});

describe('role state machine: safety', () => {
  it('no sequence of events makes two masters of the same term', () => {
    // Events for node 0 or 1; "tell" delivers the other node's current view (a heartbeat).
    const ev = faults('tell', 'quiet', 'lost', 'startup-timeout', 'server', 'fenced', 'witness', 'key');
    fc.assert(
      fc.property(fc.array(ev, { maxLength: 80 }), fc.boolean(), (events, witness) => {
        const nodes: NodeState[] = [initialState(0, { witness }), initialState(1, { witness })];
        for (const e of events) {
          const me = nodes[e.node] as NodeState;
          const other = nodes[1 - e.node] as NodeState;
          const x = asEvent(e, other);
          nodes[e.node] = step(me, x).state;
          const [a, b] = nodes as [NodeState, NodeState];
          if (a.role === 'master' && b.role === 'master') assert.notEqual(a.term, b.term, JSON.stringify(nodes));
          // Terms never go down.
          assert.ok((nodes[e.node] as NodeState).term >= me.term);
        }
      }),
      { numRuns: 20000, seed: 3 },
    );
  });

  it('whatever happened before, two healthy nodes that hear each other end with exactly one master', () => {
    const ev = faults('tell', 'quiet', 'lost', 'startup-timeout', 'server', 'serve-failed', 'witness', 'key');
    fc.assert(
      fc.property(fc.array(ev, { maxLength: 60 }), fc.constantFrom(0, 1), fc.boolean(), (events, preferred, witness) => {
        const opts = { preferred: preferred as 0 | 1, witness };
        const nodes: NodeState[] = [initialState(0, opts), initialState(1, opts)];
        const deliver = (n: number, x: HaEvent) => {
          nodes[n] = step(nodes[n] as NodeState, x).state;
        };
        const tell = (n: number) => {
          const o = nodes[1 - n] as NodeState;
          deliver(n, { type: 'peer', peer: { role: o.role, term: o.term, serverUp: o.serverUp } });
        };
        for (const e of events) deliver(e.node, asEvent(e, nodes[1 - e.node] as NodeState));
        // Then the faults end: both servers up, heartbeats both ways.
        deliver(0, { type: 'server', up: true });
        deliver(1, { type: 'server', up: true });
        for (let i = 0; i < 8; i++) tell(i % 2);
        const masters = nodes.filter((n) => n.role === 'master').length;
        assert.equal(masters, 1, JSON.stringify(nodes));
      }),
      { numRuns: 20000, seed: 5 },
    );
  });
});
