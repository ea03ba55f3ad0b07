/**
 * The hung-server probe (sidecar/src/ha/server-probe.ts): only answers to its
 * own probes count (issue 9 item 7). A client that puts a probe-like branch in
 * its request gets Kamailio's reply with that branch back through the link; it
 * must not count as a probe answer (it would turn hang detection off) and must
 * not be swallowed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PROBE_BRANCH_PREFIX, ServerProbe } from '../../sidecar/src/ha/server-probe.ts';
import { SipMessage } from '../../sidecar/src/sip/message.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';

function reply(branch: string): SipMessage {
  const m = parseMessage(
    Buffer.from(
      `SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=${branch}\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>;tag=2\r\n` +
        'Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n',
      'latin1',
    ),
  );
  assert.ok(m instanceof SipMessage);
  return m;
}

/** A probe whose link records what it sends; ticks are driven by hand through the timer. */
function probe() {
  const sent: string[] = [];
  const health: boolean[] = [];
  // No traffic connections: only the probe's own channel.
  const link = {
    trafficConnections: 0,
    sendProbe: (s: Buffer[]) => sent.push(Buffer.concat(s).toString('latin1')) > 0,
    sendOn: () => true,
    lastReadAt: () => 0,
  };
  const p = new ServerProbe(link, 5, 3, (h) => health.push(h));
  return { p, sent, health };
}

const branchOf = (msg: string) => msg.match(/branch=([^\s;]+)/)?.[1] as string;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('server probe', () => {
  it('its own answers keep the server healthy', async () => {
    const { p, sent, health } = probe();
    p.start();
    for (let i = 0; i < 10; i++) {
      await sleep(6);
      const last = sent.at(-1);
      if (last) assert.equal(p.consume(reply(branchOf(last))), true);
    }
    p.stop();
    assert.deepEqual(health, []);
  });

  it('a crafted probe-like branch from a client is not an answer: hang detection still fires, the reply is not swallowed', async () => {
    const { p, health } = probe();
    for (const forged of [
      `${PROBE_BRANCH_PREFIX}999999999`,
      `${PROBE_BRANCH_PREFIX}1`,
      `${PROBE_BRANCH_PREFIX}0-1`,
      `${PROBE_BRANCH_PREFIX}x-1`,
    ]) {
      assert.equal(p.consume(reply(forged)), false, `${forged} is a client's reply`);
    }
    p.start();
    await sleep(40);
    p.stop();
    assert.deepEqual(health, [false], 'the unanswered probes mark the server hung');
  });

  it('back to healthy only once fewer than `misses` probes are unanswered, not on an answer to an old one', async () => {
    const { p, sent, health } = probe();
    p.start();
    await sleep(60); // a dozen probes, none answered
    p.stop();
    assert.deepEqual(health, [false]);
    const n = sent.length;
    assert.ok(n >= 5, `probes sent: ${n}`);
    assert.equal(p.consume(reply(branchOf(sent[0] as string))), true, 'the oldest probe answered');
    assert.deepEqual(health, [false], 'still hung: the newer probes are still out');
    assert.equal(p.consume(reply(branchOf(sent[n - 3] as string))), true);
    assert.deepEqual(health, [false, true], 'two unanswered of three needed: healthy again');
  });

  it('an answer to a probe not sent yet does not count', async () => {
    const { p, sent, health } = probe();
    p.start();
    await sleep(7);
    const b = branchOf(sent[0] as string);
    const ahead = b.replace(/\d+$/, (n) => String(Number(n) + 1000));
    assert.equal(p.consume(reply(ahead)), false);
    await sleep(40);
    p.stop();
    assert.deepEqual(health, [false]);
  });

  it("says how long each probe waited for its answer (the server's backlog), once per probe", async () => {
    const { p, sent } = probe();
    const waits: Array<{ ms: number; connection: string }> = [];
    p.onWait = (ms, connection) => waits.push({ ms, connection });
    p.start();
    while (sent.length === 0) await sleep(1);
    p.stop();
    const first = branchOf(sent[0] as string);
    // The probe went out before `seen`; compare with the time measured by the
    // same clock, not with the 30 asked of setTimeout, which may fire ~1 ms early.
    const seen = performance.now();
    await sleep(30);
    const slept = performance.now() - seen;
    assert.equal(p.consume(reply(first)), true);
    assert.equal(p.consume(reply(first)), true, 'an answer again is still consumed');
    assert.equal(waits.length, 1, `one wait per probe: ${JSON.stringify(waits)}`);
    assert.equal(waits[0]?.connection, 'probe');
    assert.ok((waits[0]?.ms ?? 0) >= slept, `waited at least the ${slept} ms slept before its answer: ${waits[0]?.ms}`);
  });
});
