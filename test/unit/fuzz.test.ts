/**
 * Property-based fuzzing of the scanner and the stream framer (fast-check):
 * whatever the bytes, no exception escapes, the call returns promptly, and a
 * rejection always carries a known reason.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { SipStreamFramer } from '../../sidecar/src/sip/framer.ts';
import { REJECT_REASONS } from '../../sidecar/src/sip/reasons.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';
import { VECTORS } from '../vectors/rfc4475.ts';

const reasons = new Set<string>(REJECT_REASONS);
const seeds = VECTORS.map((v) => v.bytes);

/** Mutations of real messages reach deeper than random bytes alone. */
const mutated = fc
  .tuple(
    fc.constantFrom(...seeds),
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'dup')), { maxLength: 8 }),
  )
  .map(([seed, edits]) => {
    let b = Buffer.from(seed);
    for (const [pos, byte, op] of edits) {
      if (b.length === 0) break;
      const at = pos % b.length;
      if (op === 'set') b[at] = byte;
      else if (op === 'cut') b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + (byte % 16))]);
      else b = Buffer.concat([b.subarray(0, at), b.subarray(at, at + (byte % 64)), b.subarray(at)]);
    }
    return b;
  });

const anyBytes = fc.uint8Array({ maxLength: 2048 }).map((u) => Buffer.from(u));
const sipish = fc
  .array(
    fc.constantFrom(
      'INVITE ',
      'SIP/2.0',
      ' ',
      '\r\n',
      ':',
      ';',
      ',',
      '"',
      '<',
      '>',
      'Via',
      'v',
      'l',
      'CSeq',
      '1',
      '9999999999',
      'branch=',
      '=',
      '\t',
      'Content-Length',
      'sip:a@b',
      '\\',
    ),
    { maxLength: 200 },
  )
  .map((parts) => Buffer.from(parts.join(''), 'latin1'));

describe('fuzz', () => {
  it('parseMessage never throws and always answers with a message or a known reason', () => {
    fc.assert(
      fc.property(fc.oneof(mutated, anyBytes, sipish), (bytes) => {
        const started = performance.now();
        const r = parseMessage(bytes);
        if (!r.ok) assert.ok(reasons.has(r.reason), r.reason);
        else assert.ok(r.buf.length <= bytes.length);
        // A hang would show as a huge time; the bound is loose on purpose (noisy CI).
        assert.ok(performance.now() - started < 1000);
      }),
      { numRuns: 20000, seed: 4475 },
    );
  });

  it('the stream framer survives any chunking of any bytes, and keeps whole messages intact', () => {
    fc.assert(
      fc.property(
        fc.oneof(mutated, anyBytes, sipish),
        fc.array(fc.integer({ min: 1, max: 300 }), { maxLength: 20 }),
        (bytes, cuts) => {
          const out: Buffer[] = [];
          let failed = false;
          const framer = new SipStreamFramer({
            message: (m) => out.push(Buffer.from(m)),
            ping: () => {},
            error: (reason) => {
              assert.ok(reasons.has(reason));
              failed = true;
            },
          });
          let p = 0;
          for (const c of cuts) {
            framer.push(bytes.subarray(p, p + c));
            p += c;
          }
          framer.push(bytes.subarray(p));
          for (const m of out) parseMessage(m, { requireContentLength: true });
          assert.ok(failed || out.reduce((n, m) => n + m.length, 0) <= bytes.length);
        },
      ),
      { numRuns: 5000, seed: 5626 },
    );
  });

  it('memory stays bounded over a long fuzz run', () => {
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    fc.assert(
      fc.property(fc.oneof(mutated, anyBytes), (b) => void parseMessage(b)),
      { numRuns: 30000, seed: 7 },
    );
    globalThis.gc?.();
    const grown = process.memoryUsage().heapUsed - before;
    assert.ok(grown < 64 << 20, `heap grew by ${grown} bytes`);
  });
});
