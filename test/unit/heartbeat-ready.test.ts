/**
 * The heartbeat worker may bind its socket before the main thread asks
 * whether it is ready (found in a pod: the sidecar's start hung for good
 * before its HTTP port opened, and the kubelet restarted it in a loop).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { decodeHeartbeat, encodeHeartbeat, HEARD_NEVER } from '../../contract/wire.ts';
import { Heartbeats } from '../../sidecar/src/ha/heartbeat.ts';
import type { FromWorker } from '../../sidecar/src/ha/heartbeat-worker.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('heartbeat worker start', () => {
  it('ready() resolves even when the worker was ready long before it was asked', async () => {
    const hb = new Heartbeats({
      keys: [randomBytes(32)],
      ordinal: 0,
      bindAddress: '127.0.0.1',
      port: 0,
      peerAddress: '127.0.0.1',
      peerPort: 9,
      intervalMs: 1000,
      misses: 5,
      quietMs: 40,
      unheardMs: 40,
      mainHungMs: 5000,
    });
    try {
      await sleep(1500); // the worker has bound its socket by now
      const outcome = await Promise.race([hb.ready().then(() => 'ready'), sleep(3000).then(() => 'hung')]);
      assert.equal(outcome, 'ready');
    } finally {
      await hb.stop();
    }
  });
});

/** One of two workers beating to each other on loopback, 20 ms x 5. */
function twoOnLoopback(key: Buffer, ordinal: 0 | 1, port: number, peerPort: number) {
  return {
    keys: [key],
    ordinal,
    bindAddress: '127.0.0.1',
    port,
    peerAddress: '127.0.0.1',
    peerPort,
    intervalMs: 20,
    misses: 5,
    quietMs: 40,
    unheardMs: 40,
    mainHungMs: 5000,
  };
}

describe('heartbeat worker messages before anyone listens', () => {
  it("what the worker heard before the handler was set is delivered (the peer's view is told only when it changes)", async () => {
    const key = randomBytes(32);
    const cfg = (ordinal: 0 | 1, port: number, peerPort: number) => twoOnLoopback(key, ordinal, port, peerPort);
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(cfg(0, base, base + 1));
    const b = new Heartbeats(cfg(1, base + 1, base));
    try {
      await Promise.all([a.ready(), b.ready()]);
      // In a pod, main.ts awaits the Kubernetes client and the recorded terms before
      // HaNode.start() sets the handler: the peer has been heard by then.
      await sleep(1000);
      const heard = await Promise.race([
        new Promise<string>((resolve) => {
          a.onMessage = (m) => {
            if (m.type === 'peer') resolve('peer');
          };
        }),
        sleep(2000).then(() => 'nothing'),
      ]);
      assert.equal(heard, 'peer');
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('heartbeat worker: a peer with another key (decision 0012)', () => {
  it('is a key mismatch, said before the peer counts as lost; a common key ends it and the peer is heard', async () => {
    const cfg = twoOnLoopback;
    const [k1, k2] = [randomBytes(32), randomBytes(32)];
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(cfg(k1, 0, base, base + 1));
    const b = new Heartbeats(cfg(k2, 1, base + 1, base));
    const seen: string[] = [];
    a.onMessage = (m) => {
      if (m.type === 'peer-key') seen.push(`mismatch=${m.mismatch}`);
      if (m.type === 'peer') seen.push('peer');
      if (m.type === 'peer-lost') seen.push('lost');
    };
    b.onMessage = () => {};
    try {
      await Promise.all([a.ready(), b.ready()]);
      await sleep(500);
      assert.deepEqual(seen, ['mismatch=true'], 'mismatch, and never a peer');
      // A key in common (each accepts the other's): the peer is heard and the mismatch is over.
      a.setKeys([k1, k2]);
      b.setKeys([k2, k1]);
      await sleep(300);
      assert.deepEqual([...seen].sort(), ['mismatch=false', 'mismatch=true', 'peer'], seen.join(' '));
      // b's key changes under a to one a does not hold: the mismatch is said before the loss.
      seen.length = 0;
      b.setKeys([randomBytes(32)]);
      await sleep(400);
      assert.deepEqual(seen.slice(0, 2), ['mismatch=true', 'lost'], seen.join(' '));
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('a heartbeat worker that was descheduled (a busy host)', () => {
  // b's thread stops for 1.5 s (three times the loss deadline) while a goes on beating. 'now':
  // wherever the loop is; 'after-tick': while it polls right after a tick scheduled its verdict
  // (found in CI after session 9: the verdict then ran after the stall but before the next read,
  // about 1 run in 5 here, when the stall message happened to land right after b's tick).
  for (const at of ['now', 'after-tick'] as const) {
    it(`reads the beats that came meanwhile before it judges the silence: no peer-quiet, no peer-lost (stall ${at})`, async () => {
      const key = randomBytes(32);
      const base = 20000 + Math.floor(Math.random() * 20000);
      // 100 ms x 5 (not 20 x 5): a's own beats must not be late on a busy test machine.
      const slow = { intervalMs: 100, quietMs: 200, unheardMs: 200 };
      const a = new Heartbeats({ ...twoOnLoopback(key, 0, base, base + 1), ...slow });
      const b = new Heartbeats({ ...twoOnLoopback(key, 1, base + 1, base), ...slow });
      const said: string[] = [];
      let heard = false;
      // b's own verdicts on silence. a really did not hear b meanwhile, and its beats say so
      // (an unheard 'peer-quiet', then 'peer'): news, not a verdict on a's silence.
      b.onMessage = (m) => {
        if (m.type === 'peer') heard = true;
        if (m.type === 'peer-lost' || (m.type === 'peer-quiet' && !m.unheard)) said.push(m.type);
      };
      try {
        await Promise.all([a.ready(), b.ready()]);
        await sleep(1000);
        assert.ok(heard, 'b hears a');
        (b as unknown as { worker: Worker }).worker.postMessage({ type: 'stall', ms: 1500, at });
        await sleep(2600);
        assert.deepEqual(said, [], "a's beats were in b's socket all along");
      } finally {
        await a.stop();
        await b.stop();
      }
    });
  }
});

describe("a flood on the heartbeat port from another address than the peer's", () => {
  it('never reaches the worker (its socket is connected to the peer); the peer is heard throughout', async () => {
    const key = randomBytes(32);
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(twoOnLoopback(key, 0, base, base + 1));
    const b = new Heartbeats(twoOnLoopback(key, 1, base + 1, base));
    const drops: Record<string, number> = {};
    const said: string[] = [];
    b.onMessage = (m) => {
      if (m.type === 'counts') for (const [r, n] of Object.entries(m.drops)) drops[r] = (drops[r] ?? 0) + n;
      if (m.type === 'peer-quiet' || m.type === 'peer-lost') said.push(m.type);
    };
    const flood = createSocket('udp4');
    try {
      await Promise.all([a.ready(), b.ready()]);
      await sleep(500);
      for (const r of Object.keys(drops)) delete drops[r]; // the start's own (a first beat not yet echoed)
      // Junk and beat-shaped junk from 127.0.0.1 but another port: not the peer.
      for (let i = 0; i < 2000; i++) flood.send(randomBytes(i % 2 ? 64 : 200), base + 1, '127.0.0.1');
      await sleep(500);
      assert.deepEqual(drops, {}, 'nothing from the flood was judged');
      assert.deepEqual(said, []);
    } finally {
      flood.close();
      await a.stop();
      await b.stop();
    }
  });
});

describe('every silence longer than quietMs', () => {
  // Found in session 9 (the faults test "a lease the peer took during an earlier silence",
  // intermittent since session 8): the quiet timer runs on the event loop's millisecond clock,
  // which lags performance.now(), so it could fire a fraction of a millisecond before the
  // silence measured quietMs; the verdict then said nothing and nothing asked again, and the
  // master never claimed early. About 1 silence in 10 went unsaid on this machine.
  it("is said as 'peer-quiet', each time", async () => {
    const key = randomBytes(32);
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(twoOnLoopback(key, 0, base, base + 1));
    const b = new Heartbeats(twoOnLoopback(key, 1, base + 1, base));
    let quiets = 0;
    // Each worker's tick gaps (one per 20 ms tick): a's say how long b heard nothing, b's whether
    // b was there to hear. A busy CI host holds either thread up now and then (CI, stop 21: one
    // silence of 40 said twice or not at all), and such a silence is another test.
    let aGaps: number[] = [];
    let bGaps: number[] = [];
    b.onMessage = (m) => {
      if (m.type === 'peer-quiet') quiets++;
      if (m.type === 'counts') bGaps.push(...m.tickGapsMs);
    };
    a.onMessage = (m) => {
      if (m.type === 'counts') aGaps.push(...m.tickGapsMs);
    };
    const silences = 40;
    const unsaid: number[] = [];
    const voided: string[] = [];
    try {
      await Promise.all([a.ready(), b.ready()]);
      await sleep(300);
      for (let i = 0; i < silences; i++) {
        quiets = 0;
        aGaps = [];
        bGaps = [];
        const t0 = performance.now();
        // a's thread stops for 65 ms: b hears nothing for 65 to ~85 ms (quietMs 40, lost at 100).
        (a as unknown as { worker: Worker }).worker.postMessage({ type: 'stall', ms: 65 });
        await sleep(200);
        const late = performance.now() - t0 - 200;
        // Judged only when the stall was the one silence: a's one long gap, no other hold-up of
        // either thread or of this one (a gap of 35 ms or more is a silence of its own).
        const aLong = aGaps.filter((g) => g >= 35);
        const clean = aLong.length === 1 && (aLong[0] as number) >= 60 && bGaps.every((g) => g < 35) && late < 30;
        if (!clean) {
          voided.push(
            `${i}: a ${aLong.map(Math.round).join('/')} b ${Math.round(Math.max(0, ...bGaps))} late ${Math.round(late)}`,
          );
          continue;
        }
        if (quiets !== 1) unsaid.push(i);
      }
      assert.deepEqual(unsaid, [], `silences not said once as peer-quiet, of ${silences} (voided: ${voided.join(', ')})`);
      // The bug this guards against went unsaid about once in 10: enough silences must be judged.
      assert.ok(voided.length <= silences / 4, `too many silences voided by a busy host: ${voided.join(', ')}`);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('heartbeat worker scheduling', () => {
  // A host short of CPU that does not run the heartbeat thread for about the detection time
  // makes the peer take over (a false takeover, seen once in 5 load-phase runs): the node must
  // be able to tell, from its own side, that its beats went out late.
  it('reports the gap between its ticks: on time the interval, a stalled thread one gap as long as the stall', async () => {
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(twoOnLoopback(randomBytes(32), 0, base, base + 1));
    const gaps: number[] = [];
    a.onMessage = (m) => {
      if (m.type === 'counts') gaps.push(...m.tickGapsMs);
    };
    try {
      await a.ready();
      await sleep(300);
      const before = gaps.length;
      assert.ok(before >= 5, `${before} ticks reported in 300 ms`);
      (a as unknown as { worker: Worker }).worker.postMessage({ type: 'stall', ms: 120 });
      await sleep(300);
      const after = gaps.slice(before);
      assert.equal(after.filter((g) => g >= 115).length, 1, `one long gap: ${after.map(Math.round).join(' ')}`);
      const median = [...gaps.slice(0, before)].sort((x, y) => x - y)[Math.floor(before / 2)] as number;
      assert.ok(median >= 15 && median < 40, `on time: median gap ${median} ms`);
    } finally {
      await a.stop();
    }
  });
});

describe('a peer that says it does not hear us (both paths lost one way)', () => {
  // CI, session 13, as pods: the backup lost the master's beats for 107 ms while the master still
  // heard the backup's; the backup took over with the witness's grant and both served for 63 ms.
  // The master must learn it is unheard, as early as it learns of a quiet peer.
  it("is said as 'peer-quiet' (unheard) once, from unheardMs on, dated when the peer last heard us; 'peer' once it hears us again", async () => {
    const key = randomBytes(32);
    const base = 20000 + Math.floor(Math.random() * 20000);
    // Silence is not what this test is about: the peer below beats from this process's event loop,
    // which a busy CI host can hold up for tens of ms (CI, stop 20: a 'peer-quiet' of silence,
    // not unheard). quietMs and the loss are set well past such a hold-up; unheardMs stays 40.
    const a = new Heartbeats({ ...twoOnLoopback(key, 0, base, base + 1), quietMs: 250, misses: 15 });
    // The peer, by hand: it answers a's incarnation and says what it likes about hearing a.
    const peer = createSocket('udp4');
    await new Promise<void>((r) => peer.bind(base + 1, '127.0.0.1', r));
    let aIncarnation = 0;
    peer.on('message', (b) => {
      const hb = decodeHeartbeat(key, b);
      if (typeof hb !== 'string') aIncarnation = hb.incarnation;
    });
    const incarnation = Date.now();
    let beat = 0;
    const said: { type: string; heardAt?: number; unheard?: boolean; silentMs?: number }[] = [];
    a.onMessage = (m) => {
      if (m.type === 'peer' || m.type === 'peer-quiet' || m.type === 'peer-lost') said.push(m);
    };
    /**
     * Ten beats 20 ms apart; heardAgo of the i-th from `ago(i, now)` (now: when it is sent, ms
     * since the epoch). Returns when each was sent.
     */
    const beats = async (ago: (i: number, now: number) => number, role: 'backup' | 'starting' = 'backup') => {
      const sentAt: number[] = [];
      for (let i = 0; i < 10; i++) {
        const hb = {
          ordinal: 1 as const,
          role,
          serverUp: true,
          term: 2,
          incarnation,
          echo: aIncarnation,
          beat: ++beat,
          appliedSeq: 0,
        };
        const now = Date.now();
        peer.send(encodeHeartbeat(key, { ...hb, heardAgo: ago(i, now) }), base, '127.0.0.1');
        sentAt.push(now);
        await sleep(20);
      }
      return sentAt;
    };
    try {
      await a.ready();
      while (aIncarnation === 0) await sleep(10);
      await beats(() => 5);
      assert.deepEqual(
        said.map((m) => m.type),
        ['peer'],
        'a peer that hears us is heard, no more',
      );
      said.length = 0;
      // It stops hearing us (unheardMs is 40): 0, 20, 40, ... ms ago.
      const sentAt = await beats((i) => i * 20);
      // Said again only when a later beat dates it earlier (jitter of a ms or two): unheard throughout.
      assert.ok(said.length >= 1 && said.every((m) => m.type === 'peer-quiet' && m.unheard), said.map((m) => m.type).join(' '));
      const q = said[0] as { heardAt: number; silentMs: number };
      assert.equal(q.silentMs, 40, 'said at the first beat that says unheardMs');
      // Dated when the peer last heard us: the third beat's send time less 40 ms. Each beat dates it
      // its arrival less heardAgo, never earlier than the truth; one that waited (a's thread held
      // up) dates it later, and the next on time says it again, earlier: the earliest said counts.
      const expected = (sentAt[2] as number) - 40;
      const earliest = Math.min(...said.map((m) => m.heardAt as number));
      assert.ok(earliest - expected > -5 && earliest - expected < 30, `heardAt ${earliest - expected} ms off`);
      said.length = 0;
      await beats(() => 3);
      assert.deepEqual(
        said.map((m) => m.type),
        ['peer'],
        'it hears us again: the quiet spell is over',
      );
      said.length = 0;
      // A peer that just started and never heard us yet is no threat; one that is a backup is.
      await beats(() => HEARD_NEVER, 'starting');
      assert.deepEqual(
        said.map((m) => `${m.type}${m.unheard ? ' unheard' : ''}`),
        ['peer'],
      );
      said.length = 0;
      await beats(() => HEARD_NEVER, 'backup');
      assert.deepEqual(
        said.slice(0, 2).map((m) => `${m.type}${m.unheard ? ' unheard' : ''}`),
        ['peer', 'peer-quiet unheard'],
      );
      said.length = 0;
      // A later beat that dates the spell earlier (the first waited in a queue) is said again.
      await beats(() => 5);
      said.length = 0;
      // The third beat says it last heard us 40 ms ago; the later ones, 60 ms before that, whenever
      // they are sent (a late send must not move the date it gives).
      let lastHeardAt = 0;
      await beats((i, now) => {
        if (i < 2) return 0;
        if (i === 2) lastHeardAt = now - 40;
        return i === 2 ? 40 : now - (lastHeardAt - 60);
      });
      const dated = said.filter((m) => m.type === 'peer-quiet').map((m) => m.heardAt as number);
      assert.ok(dated.length >= 2 && (dated[1] as number) < (dated[0] as number) - 30, `heardAt said: ${dated.join(' ')}`);
    } finally {
      peer.close();
      await a.stop();
    }
  });

  it('tells how long ago it last heard its peer in every beat: HEARD_NEVER before it heard any', async () => {
    const key = randomBytes(32);
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(twoOnLoopback(key, 0, base, base + 1));
    a.onMessage = () => {};
    const peer = createSocket('udp4');
    await new Promise<void>((r) => peer.bind(base + 1, '127.0.0.1', r));
    const got: { incarnation: number; heardAgo: number }[] = [];
    peer.on('message', (b) => {
      const hb = decodeHeartbeat(key, b);
      if (typeof hb !== 'string') got.push(hb);
    });
    try {
      await a.ready();
      await sleep(100);
      assert.ok(got.length >= 2 && got.every((h) => h.heardAgo === HEARD_NEVER), got.map((h) => h.heardAgo).join(' '));
      const incarnation = Date.now();
      const hb = {
        ordinal: 1 as const,
        role: 'backup' as const,
        serverUp: true,
        term: 2,
        incarnation,
        appliedSeq: 0,
        heardAgo: 0,
      };
      const echo = got[0]?.incarnation ?? 0;
      got.length = 0;
      peer.send(encodeHeartbeat(key, { ...hb, echo, beat: 1 }), base, '127.0.0.1');
      await sleep(110);
      // A beat of a's already on its way when ours came says HEARD_NEVER still: from the first that does not.
      const all = got.map((h) => h.heardAgo);
      const agos = all.slice(all.findIndex((x) => x !== HEARD_NEVER));
      // Heard once, then silence: every later beat says a little more (one beat every 20 ms).
      assert.ok(agos.length >= 3 && agos.every((x) => x < HEARD_NEVER), agos.join(' '));
      for (let i = 1; i < agos.length; i++) assert.ok((agos[i] as number) > (agos[i - 1] as number), agos.join(' '));
    } finally {
      peer.close();
      await a.stop();
    }
  });
});

describe('a peer counted lost', () => {
  // Twice (CI, as pods and on the attack bed) a backup counted a live master lost after 107 ms
  // while neither side's heartbeat thread ran late; nothing said why. The loss now says what
  // this side saw in the silence.
  it('says what this side saw in the silence: drops by reason, copies of the last beat, its longest tick gap', async () => {
    const key = randomBytes(32);
    const base = 20000 + Math.floor(Math.random() * 20000);
    const a = new Heartbeats(twoOnLoopback(key, 0, base, base + 1));
    const peer = createSocket('udp4');
    await new Promise<void>((r) => peer.bind(base + 1, '127.0.0.1', r));
    let echo = 0;
    peer.on('message', (b) => {
      const hb = decodeHeartbeat(key, b);
      if (typeof hb !== 'string') echo = hb.incarnation;
    });
    let lost: Extract<FromWorker, { type: 'peer-lost' }> | null = null;
    a.onMessage = (m) => {
      if (m.type === 'peer-lost') lost = m;
    };
    try {
      await a.ready();
      while (echo === 0) await sleep(10);
      const hb = {
        ordinal: 1 as const,
        role: 'backup' as const,
        serverUp: true,
        term: 2,
        incarnation: Date.now(),
        echo,
        appliedSeq: 0,
        heardAgo: 0,
      };
      const counted = encodeHeartbeat(key, { ...hb, beat: 1 });
      peer.send(counted, base, '127.0.0.1');
      await sleep(20);
      // Then: the same beat again (its copy by the other path), and beats under another key.
      peer.send(counted, base, '127.0.0.1');
      for (let i = 2; i < 5; i++) peer.send(encodeHeartbeat(randomBytes(32), { ...hb, beat: i }), base, '127.0.0.1');
      await sleep(200);
      const l = lost as Extract<FromWorker, { type: 'peer-lost' }> | null;
      assert.ok(l, 'the peer was counted lost');
      assert.equal(l.sinceHeard.duplicates, 1);
      assert.equal(l.sinceHeard.drops.hmac, 3);
      assert.ok(l.sinceHeard.maxTickGapMs >= 15, `longest tick gap ${l.sinceHeard.maxTickGapMs} ms`);
    } finally {
      peer.close();
      await a.stop();
    }
  });
});
