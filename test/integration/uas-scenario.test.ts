/**
 * The called party used by every call test and benchmark (test/sipp/uas-call.xml,
 * run by stock sipp) must recover the way RFC 3261 / RFC 6026 ask of a UAS when a
 * proxy fails over mid-transaction, or the failover figures would count the test
 * tool's strictness as lost calls. Driven here over loopback with hand-made
 * sequences: what the new master sends after the old one died with a message.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SCENARIOS } from '../lib/sipp.ts';

const UAS_PORT = 25060;
const UAC_PORT = 25070;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SDP = 'v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n';

function request(method: string, callId: string, cseq: number, branch: string, toTag: string | null, viaParams = ''): string {
  const body = method === 'INVITE' ? SDP : '';
  return (
    `${method} sip:uas@127.0.0.1:${UAS_PORT} SIP/2.0\r\n` +
    `Via: SIP/2.0/UDP 127.0.0.1:${UAC_PORT};branch=z9hG4bK-${branch}${viaParams}\r\n` +
    `From: <sip:caller@sipha.test>;tag=c1\r\n` +
    `To: <sip:uas@sipha.test>${toTag ? `;tag=${toTag}` : ''}\r\n` +
    `Call-ID: ${callId}\r\nCSeq: ${cseq} ${method}\r\n` +
    `Contact: <sip:caller@127.0.0.1:${UAC_PORT}>\r\nMax-Forwards: 70\r\n` +
    `${body ? 'Content-Type: application/sdp\r\n' : ''}Content-Length: ${body.length}\r\n\r\n${body}`
  );
}

type Step =
  | 'retransmit-invite'
  | 'ack'
  | 'ack-again'
  | 'reinvite'
  | 'retransmit-reinvite'
  | 'reinvite-new-branch'
  | 'ack-reinvite'
  | 'bye'
  | 'bye-from-other-proxy'
  | 'wait-1200'
  | 'wait-4000';

describe('test callee (uas-call.xml) recovers like an RFC 3261 UAS', () => {
  let dir: string;
  let uas: ChildProcess;
  let sock: dgram.Socket;
  const responses = new Map<string, string[]>();
  /** When each response came (performance.now() ms), in the same order. */
  const times = new Map<string, number[]>();
  /** The top Via branch of each response, in the same order. */
  const branches = new Map<string, string[]>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sipha-uas-'));
    uas = spawn(
      'sipp',
      ['-sf', join(SCENARIOS, 'uas-call.xml'), '-i', '127.0.0.1', '-p', String(UAS_PORT), '-t', 'u1', '-nostdin', '-trace_err'],
      { cwd: dir, stdio: 'ignore' },
    );
    sock = dgram.createSocket('udp4');
    sock.on('message', (m) => {
      const text = m.toString();
      const callId = /\r\nCall-ID: *([^\r]+)/.exec(text)?.[1] ?? '';
      const status = text.slice(8, 11);
      const cseq = /\r\nCSeq: *(\d+)/.exec(text)?.[1] ?? '';
      responses.set(callId, [...(responses.get(callId) ?? []), `${status} ${cseq}`]);
      times.set(callId, [...(times.get(callId) ?? []), performance.now()]);
      branches.set(callId, [...(branches.get(callId) ?? []), /\r\nVia: [^\r]*;branch=z9hG4bK-([^;\r]+)/.exec(text)?.[1] ?? '']);
    });
    await new Promise<void>((r) => sock.bind(UAC_PORT, '127.0.0.1', () => r()));
    await sleep(300); // sipp binds its socket
  });

  after(async () => {
    sock.close();
    if (uas.exitCode === null) {
      uas.kill('SIGKILL');
      await new Promise((r) => uas.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const send = (text: string) => new Promise<void>((r) => sock.send(text, UAS_PORT, '127.0.0.1', () => r()));

  /** Runs one call's sequence; returns "status cseq-number" of each response the UAS sent, in order. */
  async function call(callId: string, steps: Step[]): Promise<string[]> {
    const invite = request('INVITE', callId, 1, `${callId}-1`, null);
    await send(invite);
    await sleep(100);
    const toTag = 'uas'; // sipp matches in-dialog requests by Call-ID: the tag's value does not matter
    for (const step of steps) {
      if (step === 'retransmit-invite') await send(invite);
      else if (step === 'ack') await send(request('ACK', callId, 1, `${callId}-a1`, toTag));
      // The caller ACKs each 200 to its INVITE it gets (RFC 3261 13.2.2.4): a late one, again.
      else if (step === 'ack-again') await send(request('ACK', callId, 1, `${callId}-a1-again`, toTag));
      else if (step === 'reinvite' || step === 'retransmit-reinvite')
        await send(request('INVITE', callId, 2, `${callId}-2`, toTag));
      // The same re-INVITE from the other proxy of the pair, under a branch of its own.
      else if (step === 'reinvite-new-branch') await send(request('INVITE', callId, 2, `${callId}-2-other`, toTag));
      else if (step === 'ack-reinvite') await send(request('ACK', callId, 2, `${callId}-a2`, toTag));
      else if (step === 'bye') await send(request('BYE', callId, 3, `${callId}-3`, toTag));
      // The BYE again from the other proxy of the pair: the same transaction (branch), but its
      // Kamailio's Via carries the id of its own link connection (";i="), so not the same bytes.
      else if (step === 'bye-from-other-proxy') await send(request('BYE', callId, 3, `${callId}-3`, toTag, ';i=3'));
      else if (step === 'wait-4000') await sleep(4000);
      else await sleep(1200);
      await sleep(100);
    }
    return responses.get(callId) ?? [];
  }

  const complete = (r: string[]) => {
    assert.equal(r[0], '180 1');
    assert.ok(r.includes('200 1'), `the INVITE is answered: ${r}`);
    assert.ok(r.includes('200 2'), `the re-INVITE is answered: ${r}`);
    assert.equal(r.at(-1), '200 3', `the BYE is answered: ${r}`);
  };

  it('a normal call: 180, 200, 200 to the re-INVITE, 200 to the BYE', async () => {
    const r = await call('normal', ['ack', 'reinvite', 'ack-reinvite', 'bye']);
    assert.deepEqual(r, ['180 1', '200 1', '200 2', '200 3']);
  });

  it('a retransmitted INVITE (its 200 died with the old master) is absorbed, the call goes on', async () => {
    complete(await call('retrans', ['retransmit-invite', 'ack', 'reinvite', 'ack-reinvite', 'bye']));
  });

  it('a re-INVITE before the ACK (the ACK died with the old master) confirms the dialog and is answered', async () => {
    complete(await call('lostack', ['reinvite', 'ack-reinvite', 'bye']));
  });

  it('both: a retransmitted INVITE, then a re-INVITE without any ACK', async () => {
    complete(await call('both', ['retransmit-invite', 'reinvite', 'ack-reinvite', 'bye']));
  });

  // The soak (session 11): a 200 to the INVITE released late by the proxy reached the caller after
  // its re-INVITE; the caller ACKed it again, and the callee took that ACK for the re-INVITE's,
  // aborted on the real one and never answered the BYE (270 calls failed).
  it('an ACK of the INVITE again, before the re-INVITE, is absorbed', async () => {
    complete(await call('ackagain1', ['ack', 'ack-again', 'reinvite', 'ack-reinvite', 'bye']));
  });

  it('an ACK of the INVITE again, before the re-INVITE is ACKed, is not taken for its ACK', async () => {
    complete(await call('ackagain2', ['ack', 'reinvite', 'ack-again', 'ack-reinvite', 'bye']));
  });

  it('an ACK of the INVITE again, after the re-INVITE was ACKed, is absorbed', async () => {
    complete(await call('ackagain3', ['ack', 'reinvite', 'ack-reinvite', 'ack-again', 'bye']));
  });

  // Coverage for a case the soak showed (session 11): the 200 to a re-INVITE lost in a hand-back,
  // the new master's tm retransmitting the re-INVITE. Driven by hand the callee answers it again
  // (this passed before any change); in the soak it did not, for a reason not found yet.
  it('a retransmitted re-INVITE (its 200 was lost) is answered again', async () => {
    const r = await call('reinvite-again', ['ack', 'reinvite', 'wait-1200', 'retransmit-reinvite', 'ack-reinvite', 'bye']);
    complete(r);
    assert.ok(r.filter((x) => x === '200 2').length >= 2, `the 200 to the re-INVITE is sent again: ${r}`);
  });

  it('an ACK of the INVITE again while the re-INVITE waits for its ACK: no answer built from that ACK', async () => {
    const r = await call('ackagain4', ['ack', 'reinvite', 'ack-again', 'wait-1200', 'ack-reinvite', 'bye']);
    complete(r);
    assert.equal(r.filter((x) => x === '200 1').length, 1, `no 200 with the ACK's CSeq: ${r}`);
  });

  it("an ACK of the INVITE again does not stop the re-INVITE's 200 going out until its own ACK", async () => {
    // The soak's capture (session 21, run 1, failover 1): a late ACK of the INVITE reached the
    // callee while its re-INVITE's 200 waited for its ACK; sipp took it at that step and stopped
    // sending the 200 again, so when the new master lost the caller's ACK of the re-INVITE,
    // nothing made the caller ACK again (RFC 3261 13.3.1.4: the UAS retransmits its 2xx until
    // the ACK of it). The call died at its BYE.
    const r = await call('ackagain5', ['ack', 'reinvite', 'ack-again', 'wait-1200', 'ack-reinvite', 'bye']);
    complete(r);
    assert.ok(r.filter((x) => x === '200 2').length >= 3, `the 200 to the re-INVITE at 0, then every 500 ms: ${r}`);
    const vias = branches.get('ackagain5') ?? [];
    const reinviteAnswers = vias.filter((_, i) => r[i] === '200 2');
    assert.ok(
      reinviteAnswers.every((b) => b === 'ackagain5-2'),
      `each carries the re-INVITE's Via, never the ACK's: ${reinviteAnswers}`,
    );
  });

  it('the re-INVITE again under another branch (from the other proxy of the pair), before its ACK: its 200 keeps going', async () => {
    const r = await call('otherbranch1', ['ack', 'reinvite', 'reinvite-new-branch', 'wait-1200', 'ack-reinvite', 'bye']);
    complete(r);
    assert.ok(r.filter((x) => x === '200 2').length >= 2, `the 200 to the re-INVITE at 0 and again 0.5 s later: ${r}`);
  });

  it('the re-INVITE again under another branch after its ACK: answered again, the call goes on', async () => {
    const r = await call('otherbranch2', ['ack', 'reinvite', 'ack-reinvite', 'reinvite-new-branch', 'ack-reinvite', 'bye']);
    complete(r);
    assert.ok(branches.get('otherbranch2')?.includes('otherbranch2-2-other'), `${branches.get('otherbranch2')}`);
  });

  it('sends its 200 again T1 after, then at twice the interval each time up to T2 (RFC 3261 13.3.1.4), until the ACK comes', async () => {
    // Found by the soak (session 22): the callee sent its 200 again every 500 ms without end;
    // behind a master slowed by a fault, 600 calls each drew two 200s a second, each relayed and
    // ACKed, and the extra load kept the master behind for two minutes (8 calls lost). A UA backs
    // off: 0, 0.5, 1.5, 3.5 s, then every 4 s.
    const r = await call('slowack', ['wait-4000', 'ack', 'reinvite', 'ack-reinvite', 'bye']);
    complete(r);
    const at = (times.get('slowack') ?? []).filter((_t, i) => r[i] === '200 1');
    assert.equal(at.length, 4, `200 sent at 0, 0.5, 1.5 and 3.5 s before the ACK at 4.1 s: ${r}`);
    const gaps = at.slice(1).map((t, i) => t - (at[i] as number));
    for (let i = 1; i < gaps.length; i++)
      assert.ok(
        (gaps[i] as number) > 1.5 * (gaps[i - 1] as number),
        `each wait twice the one before: ${gaps.map(Math.round)} ms`,
      );
  });

  it('the BYE again after a late ACK gets the same 200 (its 200 lost to a busy proxy), not one built from the ACK', async () => {
    // Found by the soak's capture (session 21, run 1): the proxy's tm never took the callee's 200
    // to its BYE; a late ACK of the re-INVITE came in between, and sipp answered each BYE again
    // with a 200 it built anew from the last message it got, the ACK ("200 (2 ACK)", the ACK's
    // Via): no answer the proxy's transaction could take, and the BYE ended in 408.
    const r = await call('byeagain', ['ack', 'reinvite', 'ack-reinvite', 'bye', 'ack-reinvite', 'bye']);
    assert.deepEqual(r.slice(-2), ['200 3', '200 3'], `the BYE and the BYE again answered alike: ${r}`);
    const vias = branches.get('byeagain') ?? [];
    assert.deepEqual(vias.slice(-2), ['byeagain-3', 'byeagain-3'], `both answers carry the BYE's Via: ${vias}`);
  });

  it('the BYE again from the other proxy (same branch, other bytes) gets the 200 again', async () => {
    // Found by the soak's capture (session 22): the master answered nothing more after the callee's
    // 200 to a BYE reached it as it handed back; the new master's tm sent the BYE again, the same
    // transaction but its Via's ";i=" (Kamailio's link connection id) differed. sipp knows a request
    // again only by its bytes: "unexpected", no answer, the BYE ended in 408. A UA matches the
    // transaction by its branch (RFC 3261 17.2.3) and sends its 200 again.
    const r = await call('byeother', ['ack', 'reinvite', 'ack-reinvite', 'bye', 'bye-from-other-proxy', 'bye-from-other-proxy']);
    assert.deepEqual(r.slice(-3), ['200 3', '200 3', '200 3'], `each BYE answered: ${r}`);
  });

  /**
   * Calls whose `late` message (the ACK, or the INVITE again) reaches the callee 499 to 504 ms
   * after its 200, as its re-answer timer fires, 8 calls a quarter-millisecond step; then the
   * rest of the call. Returns the calls whose re-INVITE or BYE went unanswered.
   */
  async function raceTheReanswerTimer(name: string, late: 'ack' | 'invite'): Promise<string[]> {
    const answeredAt = new Map<string, number>();
    const onAnswer = (m: Buffer) => {
      const text = m.toString();
      const callId = /\r\nCall-ID: *([^\r]+)/.exec(text)?.[1] ?? '';
      if (text.startsWith('SIP/2.0 200') && /\r\nCSeq: *1 INVITE/.test(text) && !answeredAt.has(callId))
        answeredAt.set(callId, performance.now());
    };
    sock.on('message', onAnswer);
    const ids: string[] = [];
    try {
      const calls: Promise<void>[] = [];
      for (let d = 499; d <= 504; d += 0.25)
        for (let k = 0; k < 8; k++) {
          const callId = `${name}-${d}-${k}`;
          ids.push(callId);
          calls.push(
            (async () => {
              await sleep(k * 7);
              const invite = request('INVITE', callId, 1, `${callId}-1`, null);
              await send(invite);
              const deadline = performance.now() + 5000;
              while (!answeredAt.has(callId) && performance.now() < deadline) await sleep(1);
              const at = (answeredAt.get(callId) ?? performance.now()) + d;
              while (performance.now() < at - 2) await sleep(1);
              while (performance.now() < at) {} // the last 2 ms to the quarter-millisecond
              if (late === 'invite') {
                await send(invite);
                await sleep(100);
              }
              await send(request('ACK', callId, 1, `${callId}-a1`, 'uas'));
              await sleep(150);
              await send(request('INVITE', callId, 2, `${callId}-2`, 'uas'));
              await sleep(300);
              await send(request('ACK', callId, 2, `${callId}-a2`, 'uas'));
              await sleep(100);
              await send(request('BYE', callId, 3, `${callId}-3`, 'uas'));
              await sleep(300);
            })(),
          );
        }
      await Promise.all(calls);
    } finally {
      sock.off('message', onAnswer);
    }
    return ids
      .filter((id) => !(responses.get(id) ?? []).includes('200 2') || responses.get(id)?.at(-1) !== '200 3')
      .map((id) => `${id}: ${responses.get(id)}`);
  }

  it('an ACK that arrives as its 500 ms re-answer timer fires is taken, not "unexpected"', async () => {
    // Found by the soak's capture (session 20): the caller's ACK, slowed by a failover, reached the
    // callee 505 ms after its 200; sipp had just jumped back to send the 200 again and, sitting on
    // that send, aborted the call on the ACK; the re-INVITE then went unanswered (a dead call).
    // The window is a scheduler pass wide (before the fix, 3 to 5 in 105 such calls failed).
    const unanswered = await raceTheReanswerTimer('acktimer', 'ack');
    assert.deepEqual(unanswered, [], `calls whose re-INVITE or BYE went unanswered: ${unanswered.join('; ')}`);
  });

  it('the INVITE again (the new master\'s tm retransmitting) as the re-answer timer fires is answered, not "unexpected"', async () => {
    // Found by the soak's capture (session 21): the new master's tm sent the INVITE again 501.7 ms
    // after the callee's 200; sipp, on the send of its 200 again, aborted the call on it, never
    // sent its 200 again, and the re-INVITE went unanswered for 30 s (a dead call).
    const unanswered = await raceTheReanswerTimer('invitetimer', 'invite');
    assert.deepEqual(unanswered, [], `calls whose re-INVITE or BYE went unanswered: ${unanswered.join('; ')}`);
  });

  it('under load (1000 calls at 200/s from the sipp caller) no call fails', async () => {
    // Catches races a slow hand-driven sequence cannot: sipp runs each next step on its
    // next pass, and a message arriving while a call sits on a <nop> is "unexpected".
    const stats = join(dir, 'uac.csv');
    const uac = spawn(
      'sipp',
      ['-sf', join(SCENARIOS, 'uac-call.xml'), `127.0.0.1:${UAS_PORT}`, '-i', '127.0.0.1', '-p', String(UAC_PORT + 1)]
        .concat(['-s', 'uas', '-r', '200', '-m', '1000', '-l', '400', '-d', '200', '-nostdin', '-timeout', '60s'])
        .concat(['-trace_stat', '-stf', stats]),
      { cwd: dir, stdio: 'ignore' },
    );
    await new Promise((r) => uac.once('exit', r));
    const rows = readFileSync(stats, 'utf8').trim().split('\n');
    const head = (rows[0] ?? '').split(';');
    const last = (rows.at(-1) ?? '').split(';');
    const col = (k: string) => Number(last[head.indexOf(k)]);
    assert.equal(col('SuccessfulCall(C)'), 1000);
    assert.equal(col('FailedCall(C)'), 0);
  });

  it('no call failed or was aborted', async () => {
    const errors = readdirSync(dir)
      .filter((f) => f.endsWith('_errors.log'))
      .map((f) => readFileSync(join(dir, f), 'utf8'))
      .join('');
    assert.doesNotMatch(errors, /Aborting|unexpected/i, errors);
  });
});
