/**
 * The replication stream's safety rules (issue 8 items 3 and 4), with real
 * TCP on loopback: the backup acks only what reached its server, a stalled
 * stream cannot hold the master's egress past the ack deadline, a stranger's
 * connection cannot end the live stream, and "in sync" means the full state
 * burst was applied.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { encodeChallenge } from '../../contract/wire.ts';
import { keyringOf } from '../../sidecar/src/ha/keyring.ts';
import { ReplicationReceiver, ReplicationSender, SyncBarrier } from '../../sidecar/src/ha/replication.ts';
import { createLogger } from '../../sidecar/src/log.ts';
import { freePort } from '../lib/free-port.ts';
import { until } from '../lib/procs.ts';

const key = randomBytes(32);
const log = createLogger('silent', 'test');
const msg = (n: number) => Buffer.from(`REGISTER sip:x SIP/2.0\r\nCall-ID: ${n}\r\n\r\n`);

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/**
 * A sender streaming to a receiver on loopback. `ackDelay`: what the backup sends reaches the
 * sender that many ms late (a server behind its backlog), through a TCP relay between the two.
 */
async function pair(
  opts: { ackDeadlineMs?: number; apply?: (link: number, p: Buffer) => boolean; ackDelay?: () => number; log?: typeof log } = {},
) {
  const port = await freePort();
  const receiver = new ReplicationReceiver(keyringOf(key), log);
  const applied: Buffer[] = [];
  receiver.apply =
    opts.apply ??
    ((_l, p) => {
      applied.push(p);
      return true;
    });
  await receiver.listen(port, '127.0.0.1');
  const ackDelay = opts.ackDelay;
  const relay =
    ackDelay === undefined
      ? null
      : net.createServer((down) => {
          const up = net.connect({ host: '127.0.0.1', port });
          down.on('data', (d) => up.write(d));
          // In order, each chunk no earlier than its own delay (a shorter delay after a longer one waits).
          const due: Array<{ at: number; d: Buffer }> = [];
          let timer: NodeJS.Timeout | null = null;
          const pump = () => {
            timer = null;
            while (due.length > 0 && (due[0] as { at: number }).at <= performance.now()) {
              const d = (due.shift() as { d: Buffer }).d;
              if (!down.destroyed) down.write(d);
            }
            if (due.length > 0) timer = setTimeout(pump, (due[0] as { at: number }).at - performance.now());
          };
          up.on('data', (d) => {
            const last = due.length > 0 ? (due[due.length - 1] as { at: number }).at : 0;
            due.push({ at: Math.max(performance.now() + ackDelay(), last), d });
            if (timer === null) pump();
          });
          const end = () => {
            up.destroy();
            down.destroy();
          };
          down.on('close', end);
          up.on('close', end);
          down.on('error', () => {});
          up.on('error', () => {});
        });
  if (relay !== null) await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  const to = relay === null ? port : (relay.address() as net.AddressInfo).port;
  const sender = new ReplicationSender(keyringOf(key), { host: '127.0.0.1', port: to }, 0, opts.log ?? log, {
    ackDeadlineMs: opts.ackDeadlineMs ?? 500,
  });
  const connections: boolean[] = [];
  const stalls: string[] = [];
  sender.onStall = (r) => stalls.push(r);
  const barrier = new SyncBarrier(sender);
  const barrierOnConnected = sender.onConnected;
  sender.onConnected = (up) => {
    barrierOnConnected(up);
    connections.push(up);
  };
  sender.start(2);
  cleanups.push(() => {
    sender.stop();
    receiver.close();
    relay?.close();
  });
  await until(() => sender.isConnected, 3000, 'stream connected');
  return { receiver, sender, barrier, applied, connections, stalls, port };
}

describe('replication stream: acks mean stored (item 4)', () => {
  it('a backup whose server cannot take a message acks nothing and ends the stream', async () => {
    const { sender, connections } = await pair({ apply: () => false });
    sender.replicate(0, [msg(1)]);
    await until(() => connections.includes(false), 3000, 'the backup ended the stream');
    assert.equal(sender.acked, 0, 'nothing was acknowledged');
  });

  it('what the server took is acked, in order', async () => {
    const { sender, applied } = await pair();
    for (let i = 1; i <= 5; i++) sender.replicate(i % 2, [msg(i)]);
    await until(() => sender.acked === 5, 3000, 'all acked');
    assert.deepEqual(
      applied.map((b) => b.toString()),
      [1, 2, 3, 4, 5].map((i) => msg(i).toString()),
    );
  });
});

describe('replication stream: the ack deadline (item 3)', () => {
  it('a backup that stops acking cannot hold egress past the deadline; the stream restarts', async () => {
    // A stalled backup: it opens the stream (a challenge), then stores nothing and never answers
    // (as a frozen main thread or a black hole).
    const stalled = net.createServer((s) => {
      s.write(encodeChallenge(key, randomBytes(16)));
      s.on('data', () => {});
    });
    await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', r));
    const port = (stalled.address() as net.AddressInfo).port;
    const accepted: net.Socket[] = [];
    stalled.on('connection', (s) => accepted.push(s));
    const sender = new ReplicationSender(keyringOf(key), { host: '127.0.0.1', port }, 0, log, { ackDeadlineMs: 150 });
    const barrier = new SyncBarrier(sender);
    const stalls: string[] = [];
    sender.onStall = (r) => stalls.push(r);
    sender.start(2);
    cleanups.push(() => {
      sender.stop();
      for (const s of accepted) s.destroy();
      stalled.close();
    });
    await until(() => sender.isConnected, 3000, 'connected');
    sender.replicate(0, [msg(1)]);
    let sent = false;
    barrier.hold(() => {
      sent = true;
    });
    assert.equal(sent, false, 'held while the ack is due');
    await until(() => sent, 3000, 'released after the deadline');
    assert.deepEqual(stalls, ['ack-deadline']);
    await until(() => accepted.length >= 2, 3000, 'the stream reconnected');
  });
});

describe('replication stream: a slow backup (its server behind) is not resynced over and over', () => {
  it('acks later than the deadline but coming: held egress released, the stream kept (no burst again), in sync once it catches up', async () => {
    // Found by the soak (session 21, run 6): after a hand-back the backup's Kamailio, a few seconds
    // restarted, acked 0.5-2 s late; each ack deadline restarted the stream with a full state burst
    // (28 in 40 s), which slowed the backup's server further, while the busy master's kernel dropped
    // 1,000-10,000 client datagrams a second: 185 calls failed.
    // The backup's acks arrive `delay` ms late.
    let delay = 300;
    const { sender, barrier, stalls, connections } = await pair({ ackDelay: () => delay, ackDeadlineMs: 150 });
    sender.synced(); // an empty state burst: in sync once acked
    await until(() => sender.inSync, 3000, 'in sync (the burst acked, late)');
    // Live traffic, each message's egress held: the acks come 300 ms after, past the 150 ms deadline
    // (and well inside the 600 ms of no ack at all that would end the stream, on a loaded host too).
    let released = 0;
    for (let i = 1; i <= 20; i++) {
      sender.replicate(0, [msg(i)]);
      barrier.hold(() => {
        released++;
      });
      await new Promise((r) => setTimeout(r, 25));
    }
    await until(() => released === 20, 3000, 'held egress released');
    assert.equal(sender.inSync, false, 'a backup this late is out of sync (its acks are no guarantee)');
    await until(() => sender.acked === sender.seq, 3000, 'the late acks all came');
    assert.deepEqual(stalls, [], 'no stall: the backup was slow, not stuck');
    assert.deepEqual(connections, [true], 'the stream was kept: no restart, no state burst again');
    // Caught up and fast again: in sync, and egress is held once more.
    delay = 0;
    sender.replicate(0, [msg(21)]);
    await until(() => sender.inSync, 3000, 'in sync again once the acks are timely');
    sender.replicate(0, [msg(22)]);
    let heldAgain = true;
    barrier.hold(() => {
      heldAgain = false;
    });
    assert.equal(heldAgain, true, 'egress waits for the ack again');
    await until(() => !heldAgain, 3000, 'and goes with it');
    assert.deepEqual(connections, [true]);
  });
});

describe('replication stream: a backup flapping between slow and timely', () => {
  it('is said once, then at most once per 10 s (not a line per flap)', async () => {
    // A backup at the edge of the deadline goes slow and timely again every few hundred ms
    // (review, session 21): a warning per flap is a log flood on an edge under load.
    const said: string[] = [];
    const recording = pino({ level: 'info' }, { write: (l: string) => said.push(JSON.parse(l).msg) });
    let late = true;
    const { sender } = await pair({ ackDelay: () => (late ? 300 : 0), ackDeadlineMs: 150, log: recording });
    sender.synced();
    await until(() => sender.acked === sender.seq, 3000, 'the empty burst acked');
    let flaps = 0;
    let wasSlow = sender.isSlow;
    const started = performance.now();
    for (let i = 1; flaps < 6 && performance.now() - started < 8000; i++) {
      late = Math.floor((performance.now() - started) / 500) % 2 === 0; // 500 ms late, 500 ms timely
      sender.replicate(0, [msg(i)]);
      await new Promise((r) => setTimeout(r, 20));
      if (sender.isSlow !== wasSlow) {
        wasSlow = sender.isSlow;
        flaps++;
      }
    }
    assert.ok(flaps >= 6, `the backup flapped (${flaps} changes)`);
    const lines = said.filter((m) => /acks late|acks in time/.test(m));
    assert.equal(lines.length, 1, `one line in the first seconds, not one per flap: ${JSON.stringify(lines)}`);
  });
});

describe('replication stream: a slow backup taking the state burst is not restarted', () => {
  it('acks of the burst that come late but come: one stream, in sync at its end', async () => {
    // The same storm's other half: a new stream starts with the whole state, and a backup whose
    // server is behind acks it in spurts; no ack for one deadline restarted the burst from the
    // start, over and over (and a loaded CI host did it to the 100k burst test).
    const { sender, connections } = await pair({ ackDelay: () => 300, ackDeadlineMs: 150 }); // the acks, 300 ms late
    sender.sendBurst(
      (function* () {
        for (let i = 1; i <= 3000; i++) yield { link: 0, bytes: msg(i) };
      })(),
    );
    await until(
      () => sender.inSync,
      5000,
      'in sync after the burst',
      () => JSON.stringify({ connections }),
    );
    assert.deepEqual(connections, [true], 'one stream: the burst was never restarted');
  });
});

describe('replication stream: who may be the stream', () => {
  it("a stranger's connection without a valid HELLO does not end the live stream", async () => {
    const { sender, port } = await pair();
    const stranger = net.connect({ host: '127.0.0.1', port });
    cleanups.push(() => stranger.destroy());
    await new Promise<void>((r) => stranger.once('connect', () => r()));
    stranger.write(Buffer.alloc(64, 7));
    await new Promise((r) => setTimeout(r, 100));
    sender.replicate(0, [msg(1)]);
    await until(() => sender.acked === 1, 3000, 'the live stream still acks');
    assert.ok(sender.isConnected);
  });
});

describe('replication stream: in sync', () => {
  it('both ends say in sync only once the burst is applied, and not after the backup drops the stream', async () => {
    const { sender, receiver } = await pair();
    sender.replicate(0, [msg(1)]);
    assert.equal(sender.inSync, false);
    sender.synced();
    await until(() => sender.inSync && receiver.inSync, 3000, 'in sync');
    receiver.drop('test');
    await until(() => !sender.inSync, 3000, 'master sees the backup out of sync');
    assert.equal(receiver.inSync, false);
  });
});

describe('replication stream: a large state burst (100k registrations)', () => {
  it('completes even when it is larger than the ack window and takes longer than the ack deadline, with the backup acking all along', async () => {
    // The backup in its own thread, its server taking 50 us per message: 20,000 messages are
    // far past the 8192-message window and take ~1 s, five times the 200 ms deadline.
    const port = await freePort();
    const backup = new Worker(new URL('./fixtures/slow-backup.ts', import.meta.url), {
      workerData: { key, port, usPerMessage: 50 },
    });
    let last = { taken: 0, inSync: false };
    backup.on('message', (m) => {
      if ('taken' in m) last = m;
    });
    cleanups.push(() => void backup.terminate());
    await new Promise((r) => backup.once('message', r));
    const sender = new ReplicationSender(keyringOf(key), { host: '127.0.0.1', port }, 0, log, { ackDeadlineMs: 200 });
    const connections: boolean[] = [];
    sender.onConnected = (up) => connections.push(up);
    sender.start(2);
    cleanups.push(() => sender.stop());
    await until(() => sender.isConnected, 3000, 'stream connected');
    // As the master sends it: in slices, at most the window outstanding (this backup is slower than that).
    sender.sendBurst(
      (function* () {
        for (let i = 1; i <= 20_000; i++) yield { link: 0, bytes: msg(i) };
      })(),
    );
    await until(
      () => sender.inSync,
      20_000,
      'in sync after the burst',
      () => JSON.stringify({ last, connections }),
    );
    assert.deepEqual(connections, [true], 'one stream: the burst was never restarted');
    await until(() => last.taken === 20_000 && last.inSync, 2000, 'the backup took every message once');
  });
});

describe('replication stream: the state burst leaves in slices (the main thread keeps beating)', () => {
  it('takes a slice per event-loop turn, never more than the window unacknowledged, and live messages follow it in order', async () => {
    const { sender, receiver, applied } = await pair();
    const N = 20_000;
    let pulled = 0;
    let maxOutstanding = 0;
    function* source() {
      for (let i = 1; i <= N; i++) {
        pulled++;
        maxOutstanding = Math.max(maxOutstanding, sender.seq - sender.acked);
        yield { link: 0, bytes: msg(i) };
      }
    }
    let done = -1;
    sender.sendBurst(source(), (n) => {
      done = n;
    });
    // Queued in one turn, 100k registrations held the master's main thread over a second.
    assert.ok(pulled <= 512, `one slice in the calling turn, not the whole burst (${pulled})`);
    assert.equal(sender.inSync, false);
    // A live message now waits behind the burst, and its turn comes while the burst is under way.
    const live = Buffer.from('OPTIONS sip:live SIP/2.0\r\nCall-ID: live\r\n\r\n');
    assert.equal(sender.replicate(1, [live]), 0, 'queued behind the burst');
    let turnsDuring = 0;
    const tick = setInterval(() => {
      if (sender.bursting) turnsDuring++;
    }, 1);
    cleanups.push(() => clearInterval(tick));
    await until(() => sender.inSync && receiver.inSync, 20_000, 'in sync after the burst');
    await until(() => applied.length === N + 1, 3000, 'the live message applied too');
    assert.equal(done, N);
    assert.ok(maxOutstanding <= 8192, `at most the window unacknowledged (${maxOutstanding})`);
    assert.ok(turnsDuring > 0, 'timers ran while the burst was sent');
    assert.equal(applied[N - 1]?.toString(), msg(N).toString(), 'the burst in order');
    assert.equal(applied[N]?.toString(), live.toString(), 'the live message after the whole burst');
    sender.replicate(0, [msg(0)]);
    await until(() => applied.length === N + 2, 3000, 'and live messages go straight out again');
  });

  it('a stream that ends mid-burst abandons it (the next stream starts its own)', async () => {
    const { sender, connections } = await pair();
    let pulled = 0;
    function* endless() {
      for (;;) {
        pulled++;
        yield { link: 0, bytes: msg(pulled) };
      }
    }
    sender.sendBurst(endless());
    await until(() => pulled > 2000, 3000, 'the burst under way');
    sender.restart('test');
    await until(() => connections.filter((c) => c).length === 2, 3000, 'a new stream');
    const at = pulled;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(pulled, at, 'the old burst stopped');
    assert.equal(sender.bursting, false);
  });
});

describe('replication stream: heartbeats on it (the second path)', () => {
  it('the backup sends its beats only once the master did (a master from before Beat frames would drop the stream)', async () => {
    const { sender, receiver } = await pair();
    const atMaster: Buffer[] = [];
    const atBackup: Buffer[] = [];
    sender.onBeat = (b) => atMaster.push(b);
    receiver.onBeat = (b) => atBackup.push(b);
    receiver.sendBeat(Buffer.from('backup-1'));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(atMaster.length, 0, 'not before the master spoke');
    sender.sendBeat(Buffer.from('master-1'));
    await until(() => atBackup.length === 1, 3000, 'the master beat arrives');
    receiver.sendBeat(Buffer.from('backup-2'));
    await until(() => atMaster.length === 1, 3000, 'now the backup beat arrives');
    assert.equal(atMaster[0]?.toString(), 'backup-2');
    assert.equal(sender.isConnected, true, 'and the stream stays up');
  });
});

describe('replication stream: two keys while a rotation runs (decision 0012)', () => {
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  const ring = (sign: Buffer, also: Buffer | null) => ({
    sign,
    signId: sign === k1 ? 1 : 2,
    others: also === null ? [] : [{ id: also === k1 ? 1 : 2, key: also }],
    witness: null,
  });
  async function connect(senderRing: ReturnType<typeof ring>, receiverRing: ReturnType<typeof ring>) {
    const port = await freePort();
    const receiver = new ReplicationReceiver(receiverRing, log);
    const applied: string[] = [];
    receiver.apply = (_l, p) => {
      applied.push(p.toString());
      return true;
    };
    await receiver.listen(port, '127.0.0.1');
    const sender = new ReplicationSender(senderRing, { host: '127.0.0.1', port }, 0, log, { ackDeadlineMs: 500 });
    const mismatches: string[] = [];
    sender.onKeyMismatch = () => mismatches.push('sender');
    receiver.onKeyMismatch = () => mismatches.push('receiver');
    sender.start(2);
    cleanups.push(() => {
      sender.stop();
      receiver.close();
    });
    return { sender, receiver, applied, mismatches };
  }

  for (const [name, s, r] of [
    ['the master already signs with the new key, the backup still with the old', ring(k2, k1), ring(k1, null)],
    [
      'the backup already signs with the new key, the master still with the old (and the new one loaded)',
      ring(k1, k2),
      ring(k2, k1),
    ],
    ['both sign with the new key and still accept the old', ring(k2, k1), ring(k2, k1)],
    ['the master has the next key loaded, the backup not yet', ring(k1, k2), ring(k1, null)],
  ] as const) {
    it(`${name}: the stream comes up and carries data`, async () => {
      const { sender, applied, mismatches } = await connect(s, r);
      await until(() => sender.isConnected, 3000, 'stream connected');
      sender.replicate(0, [msg(1)]);
      await until(() => applied.length === 1, 3000, 'the message arrives');
      assert.deepEqual(mismatches, []);
    });
  }

  it('no key in common: no stream, and both sides say it is a key mismatch', async () => {
    const { sender, applied, mismatches } = await connect(ring(k1, null), ring(k2, null));
    await until(() => mismatches.includes('sender'), 3000, 'the master sees a challenge it cannot check');
    assert.equal(sender.isConnected, false);
    assert.equal(applied.length, 0);
  });

  it('a rotation changes the keys in place: the next stream uses them', async () => {
    const senderRing = { ...ring(k1, null) };
    const { sender, receiver, mismatches } = await connect(senderRing, ring(k2, null));
    await until(() => mismatches.length > 0, 3000, 'mismatch first');
    sender.keys = ring(k2, null);
    await until(() => sender.isConnected, 5000, 'connected once the master holds the key');
    assert.equal(receiver.inSync, false);
  });
});

describe("replication stream: one connection at a time (the soak's spurious key mismatch)", () => {
  it('a stop and start while a reconnect is pending opens one stream, not two, and no frame goes on a stream before its handshake', async () => {
    const { sender, receiver, applied } = await pair();
    let accepted = 0;
    const mismatches: string[] = [];
    receiver.onKeyMismatch = (from) => mismatches.push(from);
    // Count the connections the receiver gets from here on.
    const server = (receiver as unknown as { server: net.Server }).server;
    server.on('connection', () => accepted++);
    // The stream ends (a stall restart): a reconnect is due in 100 ms...
    sender.restart('test');
    await new Promise((r) => setTimeout(r, 10));
    // ...and meanwhile the role flaps: leave master and take it again.
    sender.stop();
    sender.start(3);
    await until(() => sender.isConnected, 3000, 'connected again');
    await new Promise((r) => setTimeout(r, 300)); // past the pending reconnect
    for (let i = 1; i <= 50; i++) sender.replicate(0, [msg(i)]);
    await until(() => applied.length >= 50, 3000, 'the messages are applied');
    assert.equal(accepted, 1, 'one new connection');
    assert.deepEqual(mismatches, [], 'no frame reached a stream before its handshake');
  });
});
