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
  /** Bytes of an unfinished message (and what follows), grown by doubling: appending is amortised O(1) per byte. */
  private acc: Buffer | null = null;
  private accLen = 0;
  /** Where the search for the header end resumes in acc (bytes before it hold no CRLFCRLF). */
  private scanFrom = 0;
  /** Bytes the message at acc[0] needs in all, once its header is read; -1 before. */
  private need = -1;
  private failed = false;
  private readonly maxBytes: number;
  private readonly on: FramerEvents;
  /** Work done, for tests and diagnostics: bytes copied into acc, bytes searched for a header end. */
  copied = 0;
  scanned = 0;

  constructor(on: FramerEvents, maxBytes = 65535) {
    this.on = on;
    this.maxBytes = maxBytes;
  }

  /** True while a message has begun and not ended (bytes wait for the rest). */
  get partial(): boolean {
    return this.acc !== null;
  }

  push(chunk: Buffer): void {
    if (this.failed || chunk.length === 0) return;
    if (this.acc === null) {
      // The common case: whole messages in the chunk, framed without a copy.
      const p = this.drain(chunk, 0);
      if (p >= 0 && p < chunk.length) this.keep(chunk.subarray(p));
      return;
    }
    this.append(chunk);
    if (this.need >= 0 && this.accLen < this.need) return; // the body is still on its way
    const b = this.acc.subarray(0, this.accLen);
    const p = this.drain(b, 0, this.scanFrom);
    if (p < 0) return;
    if (p >= b.length) {
      this.acc = null;
      this.accLen = 0;
      this.scanFrom = 0;
      this.need = -1;
    } else if (p > 0) {
      // Messages were handed out as views of acc, and their users may still hold them (a
      // write queued for the end of the turn): acc is theirs now. The unfinished rest
      // starts a new one (scanFrom and need are already relative to it). Reusing acc in
      // place overwrote those messages under load (a TCP flood corrupted the link and
      // the replication stream).
      this.keep(b.subarray(p));
    }
  }

  /**
   * Frames the messages in b from p; returns where the unfinished rest starts
   * (b.length when none), or -1 after a failure. For a message that is not
   * whole yet it records the resume point (scanFrom) and the bytes it needs.
   */
  private drain(b: Buffer, p0: number, resume = 0): number {
    let p = p0;
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
      // The unfinished message at the start resumes the search where the last push
      // left it (3 bytes back: a CRLFCRLF cut in two); any other starts at itself.
      const from = p === p0 ? Math.max(p, p + resume - 3) : p;
      const he = b.indexOf(HEADER_END, from);
      this.scanned += (he < 0 ? b.length : he + 4) - from;
      if (he < 0) {
        if (b.length - p > this.maxBytes) {
          this.fail('too-large', 'header section exceeds the limit');
          return -1;
        }
        this.scanFrom = b.length - p;
        this.need = -1;
        break;
      }
      const cl = contentLength(b, p, he);
      if (cl === -2) {
        this.fail('content-length', 'no Content-Length on a stream transport');
        return -1;
      }
      if (cl < 0) {
        this.fail('content-length', 'Content-Length is not a non-negative integer');
        return -1;
      }
      const end = he + 4 + cl;
      if (end - p > this.maxBytes) {
        this.fail('too-large', `message of ${end - p} bytes exceeds the limit`);
        return -1;
      }
      if (end > b.length) {
        this.scanFrom = he - p; // found again at once when the body is in
        this.need = end - p;
        break;
      }
      this.on.message(b.subarray(p, end));
      if (this.failed) return -1;
      this.scanFrom = 0;
      this.need = -1;
      p = end;
    }
    return p;
  }

  /** Starts acc with the unfinished rest of a chunk (scanFrom and need are relative to it already). */
  private keep(rest: Buffer): void {
    this.acc = Buffer.allocUnsafe(Math.max(4096, rest.length * 2));
    rest.copy(this.acc, 0);
    this.accLen = rest.length;
    this.copied += rest.length;
  }

  private append(chunk: Buffer): void {
    const acc = this.acc as Buffer;
    if (this.accLen + chunk.length > acc.length) {
      const grown = Buffer.allocUnsafe(Math.max(acc.length * 2, this.accLen + chunk.length));
      acc.copy(grown, 0, 0, this.accLen);
      this.copied += this.accLen;
      this.acc = grown;
    }
    chunk.copy(this.acc as Buffer, this.accLen);
    this.accLen += chunk.length;
    this.copied += chunk.length;
  }

  private fail(reason: RejectReason, detail: string): void {
    this.failed = true;
    this.acc = null;
    this.accLen = 0;
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
