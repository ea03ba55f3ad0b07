import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
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

describe('stream framer: work is linear in the input (issue 9 item 6)', () => {
  /** Bytes copied and searched to frame `chunks` (the framer's own counters: no clock involved). */
  function work(chunks: Buffer[]) {
    const out: Buffer[] = [];
    const f = new SipStreamFramer({ message: (m) => out.push(Buffer.from(m)), ping: () => {}, error: () => {} });
    for (const c of chunks) f.push(c);
    return { out, copied: f.copied, scanned: f.scanned };
  }

  it('64 KiB dripped a byte at a time costs a few times 64 KiB, not 64 KiB squared', () => {
    const whole = Buffer.from(msg('x'.repeat(60_000)));
    const drip = [...whole].map((b) => Buffer.from([b]));
    const w = work(drip);
    assert.equal(w.out.length, 1);
    assert.deepEqual(w.out[0], whole);
    assert.ok(w.copied <= 4 * whole.length, `copied ${w.copied} bytes for ${whole.length}`);
    assert.ok(w.scanned <= 4 * whole.length, `searched ${w.scanned} bytes for ${whole.length}`);
  });

  it('a header section dripped a byte at a time is searched once, not once per byte', () => {
    const head = Buffer.from(msg('').replace('l: 0', `l: 0\r\nX-Pad: ${'p'.repeat(30_000)}`));
    const w = work([...head].map((b) => Buffer.from([b])));
    assert.equal(w.out.length, 1);
    assert.ok(w.scanned <= 4 * head.length, `searched ${w.scanned} bytes for ${head.length}`);
  });

  it('any chunking of many messages gives the same messages, in order', () => {
    const all = Buffer.from([msg('a'), '\r\n\r\n', msg('bb'.repeat(500)), msg(''), msg('ccc')].join(''));
    for (const size of [1, 2, 3, 7, 64, 1000, all.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < all.length; i += size) chunks.push(all.subarray(i, i + size));
      assert.deepEqual(
        work(chunks).out.map((m) => m.toString()),
        [msg('a'), msg('bb'.repeat(500)), msg(''), msg('ccc')],
        `chunks of ${size}`,
      );
    }
  });
});

describe('stream framer: property', () => {
  it('any split of any sequence of messages and pings frames exactly as the whole stream does', () => {
    const part = fc.oneof(
      fc.string({ maxLength: 300 }).map((body) => msg(body.replace(/[^\x20-\x7e]/g, 'x'))),
      fc.constant('\r\n\r\n'),
    );
    fc.assert(
      fc.property(fc.array(part, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (parts, cuts) => {
        const all = Buffer.from(parts.join(''));
        const at = [...new Set(cuts.map((c) => (all.length === 0 ? 0 : c % all.length)))].sort((x, y) => x - y);
        const chunks: Buffer[] = [];
        let prev = 0;
        for (const c of [...at, all.length]) {
          chunks.push(all.subarray(prev, c));
          prev = c;
        }
        const whole = frame([all.toString()]);
        const split = frame(chunks.map((c) => c.toString()));
        assert.deepEqual(split, whole);
        assert.deepEqual(
          whole.out,
          parts.filter((p) => p !== '\r\n\r\n'),
        );
      }),
      { numRuns: 300 },
    );
  });
});

describe('stream framer: a message handed out stays as it was', () => {
  it('is not overwritten by later chunks (callers queue it for a later write: the link, the replication stream)', () => {
    const parts = [msg('first'), msg('second'.repeat(40)), msg('third'), msg('fourth'.repeat(7))];
    const all = Buffer.from(parts.join(''));
    for (const size of [5, 13, 64, 100, 333]) {
      const kept: Buffer[] = [];
      const f = new SipStreamFramer({ message: (m) => kept.push(m), ping: () => {}, error: () => {} });
      for (let i = 0; i < all.length; i += size) f.push(Buffer.from(all.subarray(i, i + size)));
      // Read only now, after every push: as a write queued for the end of the turn would.
      assert.deepEqual(
        kept.map((m) => m.toString()),
        parts,
        `chunks of ${size}`,
      );
    }
  });
});
