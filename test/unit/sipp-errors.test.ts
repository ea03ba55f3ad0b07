/**
 * sipp's error log as the benches report it: the failures, not the noise of
 * late retransmissions for calls that ended well (the soak's first 8 KB held
 * only those, and its 39 failed calls went unexplained).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errorEvents, eventsOfCalls } from '../lib/sipp.ts';

/** A late 200 to a BYE, as sipp 3.6 logs it (taken from a soak run's log). */
const dead = (
  n: number,
) => `2026-11-30\t10:09:01.3547${n}\t1796033341.3547${n}: Dead call 7465${n}-1110@198.18.0.10 (successful), received 'SIP/2.0 200 OK
Via: SIP/2.0/UDP 198.18.0.10:5060;received=198.18.0.10;branch=z9hG4bK-1110-7465${n}-11;rport=5060
CSeq: 3 BYE
Content-Length: 0

'`;
const aborted = `2026-11-30\t10:14:02.100000\t1796033642.100000: Aborting call on unexpected message for Call-Id '8001-1110@198.18.0.10': while expecting '180' (index 1), received 'SIP/2.0 500 Server error
CSeq: 1 INVITE

'`;

/** The callee's scripted "no ACK within 500 ms: answer again" (uas-call.xml), as sipp logs each. */
const timedJump = `2026-12-01\t21:30:11.587451\t1796160611.587451: Call-Id: c501-0, receive timeout on message sipha call (UAS):3, jumping to label 2`;

describe('sipp error log, as the benches report it', () => {
  it('keeps the failures and leaves out messages for calls that had ended well and timed jumps, saying how many', () => {
    const log = `The following events occurred:\n${[dead(1), timedJump, dead(2), aborted, dead(3)].join('\n')}\n`;
    const out = errorEvents(log);
    assert.match(out, /Aborting call on unexpected message for Call-Id '8001-1110/);
    assert.match(out, /SIP\/2\.0 500 Server error/);
    assert.doesNotMatch(out, /Dead call|jumping to label/);
    assert.match(out, /\(4 messages for calls that had ended well, or timed jumps, left out\)/);
  });

  it('a failure after many kilobytes of noise is still reported (it used to be cut at 8 KB)', () => {
    const noise = Array.from({ length: 200 }, (_, i) => dead(i % 10)).join('\n');
    assert.ok(noise.length > 8000);
    const out = errorEvents(`The following events occurred:\n${noise}\n${aborted}\n`);
    assert.match(out, /while expecting '180'/);
  });

  it('names what each call met, by its Call-ID, late messages to ended calls and timed jumps included', () => {
    const log = `The following events occurred:\n${[dead(1), timedJump, aborted, dead(1)].join('\n')}\nSome event naming no call\n`;
    const byCall = eventsOfCalls(log);
    assert.deepEqual([...byCall.keys()], ['74651-1110@198.18.0.10', 'c501-0', '8001-1110@198.18.0.10']);
    assert.deepEqual(byCall.get('74651-1110@198.18.0.10'), [
      "Dead call 74651-1110@198.18.0.10 (successful), received 'SIP/2.0 200 OK",
      "Dead call 74651-1110@198.18.0.10 (successful), received 'SIP/2.0 200 OK",
    ]);
    assert.deepEqual(byCall.get('c501-0'), [
      'Call-Id: c501-0, receive timeout on message sipha call (UAS):3, jumping to label 2',
    ]);
    assert.match(byCall.get('8001-1110@198.18.0.10')?.[0] ?? '', /^Aborting call on unexpected message .* while expecting '180'/);
  });

  it('caps what it keeps', () => {
    const many = Array.from({ length: 100 }, () => aborted).join('\n');
    assert.ok(errorEvents(`The following events occurred:\n${many}\n`, 1000).length <= 1000);
  });
});
