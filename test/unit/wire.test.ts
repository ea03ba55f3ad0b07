import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  decodeHeartbeat,
  encodeAck,
  encodeData,
  encodeHeartbeat,
  encodeHello,
  type Frame,
  FrameReader,
} from '../../contract/wire.ts';

const key = randomBytes(32);

describe('wire formats', () => {
  it('a heartbeat round-trips; a forged or damaged one is refused with a reason', () => {
    const hb = {
      ordinal: 1 as const,
      role: 'backup' as const,
      serverUp: true,
      term: 7,
      incarnation: 1_795_969_970_394,
      echo: 1_795_969_970_001,
      beat: 12345,
      appliedSeq: 2 ** 40 + 5,
      heardAgo: 65534,
    };
    const b = encodeHeartbeat(key, hb);
    assert.deepEqual(decodeHeartbeat(key, b), hb);
    assert.equal(decodeHeartbeat(randomBytes(32), b), 'hmac');
    const bad = Buffer.from(b);
    bad[9] = (bad[9] as number) ^ 1;
    assert.equal(decodeHeartbeat(key, bad), 'hmac');
    assert.equal(decodeHeartbeat(key, b.subarray(1)), 'size');
  });

  it('frames survive any chunking and keep order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 30 }),
        (payloads, cuts) => {
          const stream = Buffer.concat([
            encodeHello(key, 0, 4, 77, Buffer.alloc(16, 1), Buffer.alloc(16, 2)),
            ...payloads.flatMap((p, i) => encodeData(key, i + 1, 4, i % 3, [Buffer.from(p)])),
            encodeAck(key, 42),
          ]);
          const got: Frame[] = [];
          const r = new FrameReader(key, (f) => got.push(f));
          let p = 0;
          for (const c of cuts) {
            assert.equal(r.push(stream.subarray(p, p + c)), null);
            p += c;
          }
          assert.equal(r.push(stream.subarray(p)), null);
          assert.equal(got.length, payloads.length + 2);
          assert.deepEqual(got[0], {
            type: 3,
            ordinal: 0,
            term: 4,
            incarnation: 77,
            nonceR: Buffer.alloc(16, 1),
            nonceS: Buffer.alloc(16, 2),
          });
          payloads.forEach((pl, i) => {
            const f = got[i + 1] as Extract<Frame, { type: 1 }>;
            assert.equal(f.seq, i + 1);
            assert.equal(f.link, i % 3);
            assert.deepEqual(Buffer.from(f.payload), Buffer.from(pl));
          });
          assert.deepEqual(got.at(-1), { type: 2, seq: 42 });
        },
      ),
      { numRuns: 500, seed: 11 },
    );
  });

  it('a frame with a wrong key or a flipped byte stops the stream', () => {
    const frame = Buffer.concat(encodeData(key, 1, 1, 0, [Buffer.from('INVITE sip:x SIP/2.0\r\n\r\n')]));
    assert.equal(new FrameReader(randomBytes(32), () => {}).push(frame), 'hmac');
    const bad = Buffer.from(frame);
    bad[20] = (bad[20] as number) ^ 0x20;
    assert.equal(new FrameReader(key, () => {}).push(bad), 'hmac');
    assert.equal(new FrameReader(key, () => {}).push(Buffer.from([0xff, 0xff, 0xff, 0xff, 1])), 'frame-length');
  });
});
