/**
 * Splits a SIP byte stream (TCP) into messages by Content-Length (RFC 3261
 * 18.3). The common case, one or more whole messages per chunk, is handled
 * without copying; bytes are joined only when a message spans chunks.
 * Double-CRLF keep-alives (RFC 5626 4.4.1) are reported so the caller can
 * answer with a single CRLF pong.
 */
import { CR, indexOfCrlf, isLws, LF } from './chars.ts';
import { parseUint } from './fields.ts';
import { Hdr, headerId } from './headers.ts';
import type { RejectReason } from './reasons.ts';

export interface FramerEvents {
  message(bytes: Buffer): void;
  ping(): void;
  /** The stream cannot be resynchronised: the caller closes the connection. */
  error(reason: RejectReason, detail: string): void;
}

const HEADER_END = Buffer.from('\r\n\r\n');

export class SipStreamFramer {
  private pending: Buffer | null = null;
  private failed = false;
  private readonly maxBytes: number;
  private readonly on: FramerEvents;

  constructor(on: FramerEvents, maxBytes = 65535) {
    this.on = on;
    this.maxBytes = maxBytes;
  }

  push(chunk: Buffer): void {
    if (this.failed) return;
    let b = chunk;
    if (this.pending !== null) {
      b = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    let p = 0;
    while (p < b.length) {
      // Leading CRLFs: keep-alive pings ("\r\n\r\n") or stray line ends.
      if (b[p] === CR || b[p] === LF) {
        if (b[p] === CR && b[p + 1] === LF && b[p + 2] === CR && b[p + 3] === LF) {
          this.on.ping();
          p += 4;
        } else if (b[p] === CR && p + 3 >= b.length) {
          break; // maybe the start of a ping that is still on its way
        } else {
          p++;
        }
        continue;
      }
      const he = b.indexOf(HEADER_END, p);
      if (he < 0) {
        if (b.length - p > this.maxBytes) {
          this.fail('too-large', 'header section exceeds the limit');
          return;
        }
        break;
      }
      const cl = contentLength(b, p, he);
      if (cl === -2) {
        this.fail('content-length', 'no Content-Length on a stream transport');
        return;
      }
      if (cl < 0) {
        this.fail('content-length', 'Content-Length is not a non-negative integer');
        return;
      }
      const end = he + 4 + cl;
      if (end - p > this.maxBytes) {
        this.fail('too-large', `message of ${end - p} bytes exceeds the limit`);
        return;
      }
      if (end > b.length) break;
      this.on.message(b.subarray(p, end));
      if (this.failed) return;
      p = end;
    }
    if (p < b.length) this.pending = b.subarray(p);
  }

  private fail(reason: RejectReason, detail: string): void {
    this.failed = true;
    this.pending = null;
    this.on.error(reason, detail);
  }
}

/** Content-Length in the header block b[s, he); -2 if absent, -1 if bad. */
function contentLength(b: Buffer, s: number, he: number): number {
  let p = indexOfCrlf(b, s) + 2; // skip the start line
  while (p > 1 && p <= he) {
    const e = indexOfCrlf(b, p);
    let q = p;
    while (q < e && b[q] !== 0x3a && !isLws(b[q])) q++;
    if (headerId(b, p, q) === Hdr.ContentLength) {
      while (q < e && b[q] !== 0x3a) q++;
      q++;
      while (q < e && isLws(b[q])) q++;
      let z = e;
      while (z > q && isLws(b[z - 1])) z--;
      return parseUint(b, q, z, 0x7fffffff);
    }
    p = e + 2;
  }
  return -2;
}
