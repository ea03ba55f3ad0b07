import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SipStreamFramer } from '../../sidecar/src/sip/framer.ts';

const msg = (body: string, cl = Buffer.byteLength(body)) =>
  `MESSAGE sip:b@c SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\nl: ${cl}\r\n\r\n${body}`;

function frame(chunks: string[]) {
  const out: string[] = [];
  const errors: string[] = [];
  let pings = 0;
  const f = new SipStreamFramer({
    message: (m) => out.push(m.toString()),
    ping: () => pings++,
    error: (r) => errors.push(r),
  });
  for (const c of chunks) f.push(Buffer.from(c));
  return { out, errors, pings };
}

describe('stream framer', () => {
  it('splits back-to-back messages in one chunk by Content-Length', () => {
    const r = frame([msg('one') + msg('second')]);
    assert.deepEqual(r.out, [msg('one'), msg('second')]);
  });

  it('joins a message cut at every possible byte', () => {
    const whole = msg('hello world');
    for (let cut = 1; cut < whole.length; cut++) {
      const r = frame([whole.slice(0, cut), whole.slice(cut)]);
      assert.deepEqual(r.out, [whole], `cut at ${cut}`);
    }
  });

  it('reports double-CRLF keep-alives as pings, even split, and skips stray CRLFs', () => {
    const r = frame(['\r\n\r', '\n', msg('x'), '\r\n\r\n', '\r\n', msg('y')]);
    assert.equal(r.pings, 2);
    assert.deepEqual(r.out, [msg('x'), msg('y')]);
  });

  it('gives up on a stream without Content-Length or with a bad one', () => {
    assert.deepEqual(frame([msg('x').replace('l: 1\r\n', '')]).errors, ['content-length']);
    assert.deepEqual(frame([msg('x', -1)]).errors, ['content-length']);
  });

  it('gives up on a header section larger than the limit', () => {
    const f: string[] = [];
    const framer = new SipStreamFramer({ message: () => {}, ping: () => {}, error: (r) => f.push(r) }, 1024);
    framer.push(Buffer.alloc(2000, 0x41));
    assert.deepEqual(f, ['too-large']);
  });
});
