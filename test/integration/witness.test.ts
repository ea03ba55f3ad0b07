/**
 * The UDP witness as it runs: the real arbiter process (sidecar/src/witness/
 * main.ts) on 127.0.0.1 with a port the kernel picked, and the sidecar's real
 * client (UdpWitness) for each side of a pair. Side 1 talks through a small
 * UDP relay, so a test can record its traffic and replay it. Every wait is
 * bounded; the arbiter is ended by its PID.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeAnswer, encodeClaim, witnessKey, witnessPairId } from '../../contract/witness-wire.ts';
import type { WitnessVerdict } from '../../sidecar/src/ha/witness.ts';
import { UdpWitness } from '../../sidecar/src/ha/witness-udp.ts';
import { sleep, watchOutput } from '../lib/procs.ts';
import { readMetric } from '../lib/prom-text.ts';

const MAIN = fileURLToPath(new URL('../../sidecar/src/witness/main.ts', import.meta.url));
const HOST = '127.0.0.1';
const TTL_MS = 400;

interface Arbiter {
  child: ChildProcess;
  port: number;
  /** One series of /metrics; fails when the series is absent (never reads 0 for "not found"). */
  metric(name: string, labels: Record<string, string>): Promise<number>;
}

/** The JSON log line with this msg, waited for. */
async function logLine(out: ReturnType<typeof watchOutput>, msg: string): Promise<Record<string, unknown>> {
  await out.waitFor(new RegExp(`"msg":"${msg}"`), 15000);
  const line = out
    .text()
    .split('\n')
    .find((l) => l.includes(`"msg":"${msg}"`));
  return JSON.parse(line as string);
}

/**
 * `keyEnv`: SIPHA_REPLICATION_KEY (the pair's key) or SIPHA_WITNESS_KEY (the key derived from it).
 * The arbiter grants leases of up to TTL_MS and answers once its start-up quiet period is over
 * (`answering: false`: return as soon as it listens, on `port` if given).
 */
async function startArbiter(
  keyEnv: Record<string, string>,
  o: { port?: number; answering?: boolean; maxTtlMs?: number } = {},
): Promise<Arbiter> {
  const child = spawn(process.execPath, [MAIN], {
    env: {
      ...process.env,
      SIPHA_WITNESS_LISTEN: `${HOST}:${o.port ?? 0}`,
      SIPHA_WITNESS_HTTP: `${HOST}:0`,
      SIPHA_WITNESS_MAX_TTL_MS: String(o.maxTtlMs ?? TTL_MS),
      SIPHA_LOG_LEVEL: 'info',
      ...keyEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = watchOutput(child);
  const udp = await logLine(out, 'witness listening');
  const web = await logLine(out, 'witness http listening');
  if (o.answering !== false) await logLine(out, 'witness answering');
  return {
    child,
    port: udp.port as number,
    metric: async (name, labels) => {
      return readMetric(await (await fetch(`http://${HOST}:${web.port}/metrics`)).text(), name, labels);
    },
  };
}

/** A UDP relay between one client and the arbiter that records both directions and can answer with an old answer. */
class Relay {
  readonly sock = dgram.createSocket('udp4');
  readonly claims: Buffer[] = [];
  readonly answers: Buffer[] = [];
  private client: dgram.RemoteInfo | null = null;
  /** When set, the next claim is not forwarded: this answer goes back instead. */
  replayNext: Buffer | null = null;
  /** Holds each answer this long before passing it on (a slow return path). */
  answerDelayMs = 0;
  private readonly arbiterPort: number;

  constructor(arbiterPort: number) {
    this.arbiterPort = arbiterPort;
    this.sock.on('message', (b, r) => {
      if (r.port === this.arbiterPort) {
        this.answers.push(b);
        const to = this.client;
        if (to) setTimeout(() => this.sock.send(b, to.port, to.address), this.answerDelayMs);
        return;
      }
      this.client = r;
      if (this.replayNext) {
        this.sock.send(this.replayNext, r.port, r.address);
        this.replayNext = null;
        return;
      }
      this.claims.push(b);
      this.sock.send(b, this.arbiterPort, HOST);
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.sock.bind(0, HOST, () => resolve(this.sock.address().port)));
  }
}

/** Sends datagrams from a fresh socket and returns whatever came back within `ms`. */
async function sendRaw(port: number, datagrams: Buffer[], ms: number): Promise<Buffer[]> {
  const s = dgram.createSocket('udp4');
  const got: Buffer[] = [];
  s.on('message', (b) => got.push(b));
  await new Promise<void>((r) => s.bind(0, HOST, () => r()));
  for (const d of datagrams) s.send(d, port, HOST);
  await sleep(ms);
  s.close();
  return got;
}

function expectVerdict<V extends WitnessVerdict['verdict']>(
  v: WitnessVerdict,
  verdict: V,
): Extract<WitnessVerdict, { verdict: V }> {
  assert.equal(v.verdict, verdict, JSON.stringify(v));
  return v as Extract<WitnessVerdict, { verdict: V }>;
}

describe('UDP witness: the arbiter process and two sidecar clients on loopback', { timeout: 60_000 }, () => {
  const key = randomBytes(32); // the pair's replication key
  const pair = witnessPairId(witnessKey(key));
  let arb: Arbiter;
  let relay: Relay;
  let a: UdpWitness; // side 0, direct
  let b: UdpWitness; // side 1, through the relay

  before(async () => {
    arb = await startArbiter({ SIPHA_REPLICATION_KEY: key.toString('base64') });
    relay = new Relay(arb.port);
    const relayPort = await relay.listen();
    a = await UdpWitness.open({ key, ordinal: 0, address: HOST, port: arb.port, ttlMs: TTL_MS, bindAddress: HOST });
    b = await UdpWitness.open({ key, ordinal: 1, address: HOST, port: relayPort, ttlMs: TTL_MS, bindAddress: HOST });
  });

  after(() => {
    a?.close();
    b?.close();
    relay?.sock.close();
    const pid = arb?.child.pid;
    if (pid !== undefined && arb.child.exitCode === null && arb.child.signalCode === null) process.kill(pid, 'SIGKILL');
  });

  it('grants the first claimant, refuses the other side naming the holder and its term, and renews', async () => {
    const g = expectVerdict(await a.claim(2), 'granted');
    const answered = performance.now();
    assert.equal(g.reason, 'free');
    assert.equal(g.term, 2);
    // The lease runs from the claim's send, which lies before the answer: never
    // past answer + ttl. (The send instant itself is not observable here; a bound
    // from before the call failed on a loaded CI host by 1.5 ms.)
    assert.ok(g.validUntil > answered && g.validUntil <= answered + TTL_MS, `validUntil ${g.validUntil - answered}`);
    const r = expectVerdict(await b.claim(1), 'refused');
    assert.equal(r.reason, 'held');
    assert.equal(r.holder, 0);
    assert.equal(r.holderTerm, 2);
    assert.ok(r.remainingMs > 0 && r.remainingMs <= TTL_MS);
    assert.equal(expectVerdict(await a.claim(2), 'granted').reason, 'renewal');
  });

  it('a higher term does not take an unexpired lease; the holder keeps renewing', async () => {
    const r = expectVerdict(await b.claim(3), 'refused');
    assert.deepEqual([r.holder, r.holderTerm], [0, 2]);
    assert.equal(expectVerdict(await a.claim(2), 'granted').reason, 'renewal');
  });

  it('a silent holder’s lease expires after its ttl, not before: then the other side gets it', async () => {
    expectVerdict(await a.claim(2), 'granted');
    const since = performance.now();
    let granted: WitnessVerdict | null = null;
    while (performance.now() - since < 2000) {
      const v = await b.claim(3);
      if (v.verdict === 'granted') {
        granted = v;
        break;
      }
      expectVerdict(v, 'refused');
      await sleep(40);
    }
    const waited = performance.now() - since;
    assert.equal(expectVerdict(granted as WitnessVerdict, 'granted').reason, 'expired');
    assert.ok(waited >= TTL_MS - 50 && waited < TTL_MS + 400, `granted after ${Math.round(waited)} ms`);
  });

  it('a late answer: the lease counts from the claim sent, not from the answer received', async () => {
    const delay = 100; // below the client's 150 ms attempt timeout: one attempt, answered late
    relay.answerDelayMs = delay;
    try {
      const [claims0, answers0] = [relay.claims.length, relay.answers.length];
      const sentBefore = performance.now();
      const g = expectVerdict(await b.claim(3), 'granted');
      const answered = performance.now();
      assert.equal(g.reason, 'renewal');
      assert.deepEqual([relay.claims.length - claims0, relay.answers.length - answers0], [1, 1], 'one attempt, one answer');
      // Sent at or after sentBefore, answered at least `delay` later: counted from
      // the send it ends by answered - delay + ttl; counted from the answer it would not.
      assert.ok(g.validUntil >= sentBefore + TTL_MS - 1, `validUntil ${g.validUntil - sentBefore} after the call`);
      assert.ok(g.validUntil <= answered - delay + TTL_MS, `validUntil ${g.validUntil - answered} after the answer`);
    } finally {
      relay.answerDelayMs = 0;
    }
  });

  it('an old answer replayed to a client is rejected by its nonce; the retry gets the truth', async () => {
    assert.equal(expectVerdict(await b.claim(5), 'granted').reason, 'renewal');
    const oldGrant = relay.answers.at(-1) as Buffer;
    await sleep(TTL_MS + 50); // b goes silent: its lease runs out, a takes it
    assert.equal(expectVerdict(await a.claim(6), 'granted').reason, 'expired');
    const before = b.drops.get('nonce') ?? 0;
    relay.replayNext = oldGrant; // b's first attempt is "answered" with its old grant
    const v = expectVerdict(await b.claim(5), 'refused');
    assert.deepEqual([v.holder, v.holderTerm], [0, 6]);
    assert.equal(b.drops.get('nonce'), before + 1);
  });

  it('a recorded claim sent again to the arbiter is dropped unanswered and counted (replay), and renews nothing', async () => {
    const got = await sendRaw(arb.port, [relay.claims.at(-1) as Buffer], 300);
    assert.equal(got.length, 0);
    assert.equal(await arb.metric('sipha_witness_dropped_total', { reason: 'replay' }), 1);
    assert.equal(expectVerdict(await a.claim(6), 'granted').reason, 'renewal', 'side 0 still holds it');
  });

  it('forged and foreign datagrams are counted and ignored by the arbiter; a forged answer by the client', async () => {
    const wrong = randomBytes(32);
    const claim = (k: Buffer, id: number) =>
      encodeClaim(k, { ordinal: 1, pair: id, term: 99, ttlMs: 60_000, incarnation: Date.now(), seq: 1, nonce: randomBytes(16) });
    const got = await sendRaw(
      arb.port,
      [Buffer.alloc(0), Buffer.from('INVITE sip:x SIP/2.0\r\n\r\n'), claim(wrong, pair), claim(wrong, witnessPairId(wrong))],
      300,
    );
    assert.equal(got.length, 0, 'nothing forged is answered');
    assert.equal(await arb.metric('sipha_witness_dropped_total', { reason: 'size' }), 2);
    assert.equal(await arb.metric('sipha_witness_dropped_total', { reason: 'hmac' }), 1);
    assert.equal(await arb.metric('sipha_witness_dropped_total', { reason: 'pair' }), 1);
    assert.equal(expectVerdict(await a.claim(6), 'granted').reason, 'renewal', 'the forged term-99 claim took nothing');

    const forged = encodeAnswer(wrong, {
      verdict: 'granted',
      reason: 'free',
      holder: 0,
      pair,
      holderTerm: 6,
      remainingMs: 60_000,
      nonce: randomBytes(16),
    });
    await sendRaw(a.localPort, [forged], 100);
    assert.equal(a.drops.get('hmac'), 1);
  });

  it('survives a flood of hostile datagrams and keeps answering', async () => {
    const junk: Buffer[] = [];
    for (let i = 0; i < 300; i++) {
      const d = randomBytes(i % 3 === 0 ? 62 : i % 200);
      if (i % 2 === 0 && d.length >= 5) {
        d.write('SPWC', 0, 'latin1');
        d[4] = 1;
      }
      junk.push(d);
    }
    assert.equal((await sendRaw(arb.port, junk, 300)).length, 0);
    assert.equal(arb.child.exitCode, null, 'the arbiter is still running');
    assert.equal(expectVerdict(await a.claim(6), 'granted').reason, 'renewal');
    assert.equal((await arb.metric('sipha_witness_claims_total', { outcome: 'granted', reason: 'renewal' })) >= 4, true);
  });

  it('is unreachable when the arbiter is stopped: two silent attempts, then the verdict', async () => {
    const pid = arb.child.pid as number;
    const exited = new Promise((r) => arb.child.once('exit', r));
    process.kill(pid, 'SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    assert.notEqual(arb.child.exitCode ?? arb.child.signalCode, null, 'the arbiter exited');
    const t0 = performance.now();
    const v = expectVerdict(await a.claim(6), 'unreachable');
    const took = performance.now() - t0;
    assert.equal(v.reason, 'timeout');
    assert.ok(took >= 2 * 150 - 5 && took < 1000, `unreachable after ${Math.round(took)} ms`);
  });
});

describe('UDP witness restarted while a side holds a lease', { timeout: 30_000 }, () => {
  const key = randomBytes(32);
  const arbs: Arbiter[] = [];
  let a: UdpWitness;
  let b: UdpWitness;

  after(() => {
    a?.close();
    b?.close();
    for (const arb of arbs) {
      const pid = arb.child.pid;
      if (pid !== undefined && arb.child.exitCode === null && arb.child.signalCode === null) process.kill(pid, 'SIGKILL');
    }
  });

  // The arbiter keeps its lease in memory. A master cut off from its peer serves on
  // to its lease's end; had the restarted arbiter granted the other side at once
  // ('free'), both would serve (decision 0005). It answers nothing until the longest
  // lease it grants has run out since its start.
  // A lease long enough that the restarted process is listening well before it ends (a loaded
  // CI host took over 400 ms to start one: its quiet period, counted from its start, was over).
  const LONG_TTL_MS = 3000;
  it('grants the other side nothing before the lease granted before the restart has run out', async () => {
    const opts = { maxTtlMs: LONG_TTL_MS };
    const first = await startArbiter({ SIPHA_REPLICATION_KEY: key.toString('base64') }, opts);
    arbs.push(first);
    a = await UdpWitness.open({ key, ordinal: 0, address: HOST, port: first.port, ttlMs: LONG_TTL_MS, bindAddress: HOST });
    b = await UdpWitness.open({ key, ordinal: 1, address: HOST, port: first.port, ttlMs: LONG_TTL_MS, bindAddress: HOST });
    const held = expectVerdict(await a.claim(2), 'granted');
    const exited = new Promise((r) => first.child.once('exit', r));
    process.kill(first.child.pid as number, 'SIGKILL');
    await Promise.race([exited, sleep(5000)]);
    const second = await startArbiter(
      { SIPHA_REPLICATION_KEY: key.toString('base64') },
      { ...opts, port: first.port, answering: false },
    );
    arbs.push(second);
    const verdicts: string[] = [];
    let grantedAt = 0;
    while (performance.now() - held.validUntil < 3000) {
      const v = await b.claim(3);
      verdicts.push(v.verdict === 'granted' ? `granted ${v.reason}` : v.verdict);
      if (v.verdict === 'granted') {
        grantedAt = performance.now();
        break;
      }
    }
    assert.equal(verdicts[0], 'unreachable', `the first claim after the restart: ${verdicts.join(', ')}`);
    assert.equal(verdicts.at(-1), 'granted free', verdicts.join(', '));
    assert.ok(grantedAt > held.validUntil, `granted ${Math.round(held.validUntil - grantedAt)} ms before side 0's lease ends`);
    assert.ok((await second.metric('sipha_witness_dropped_total', { reason: 'starting' })) >= 2, 'its silence is counted');
  });
});

describe('UDP witness: a witness host given only the derived key (SIPHA_WITNESS_KEY)', { timeout: 30_000 }, () => {
  const key = randomBytes(32);
  let arb: Arbiter;
  let a: UdpWitness;

  after(() => {
    a?.close();
    const pid = arb?.child.pid;
    if (pid !== undefined && arb.child.exitCode === null && arb.child.signalCode === null) process.kill(pid, 'SIGKILL');
  });

  it('--derive-key prints it; the sidecar, holding the pair key, is answered', async () => {
    const derived = execFileSync(process.execPath, [MAIN, '--derive-key'], {
      env: { ...process.env, SIPHA_REPLICATION_KEY: key.toString('base64') },
      encoding: 'utf8',
    }).trim();
    assert.equal(derived, witnessKey(key).toString('base64'));
    assert.notEqual(derived, key.toString('base64'));
    arb = await startArbiter({ SIPHA_WITNESS_KEY: derived });
    a = await UdpWitness.open({ key, ordinal: 1, address: HOST, port: arb.port, ttlMs: TTL_MS, bindAddress: HOST });
    assert.equal(expectVerdict(await a.claim(1), 'granted').reason, 'free');
  });
});
