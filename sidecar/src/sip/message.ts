import { Hdr, type HdrId } from './headers.ts';
import type { Via } from './via.ts';

/**
 * A parsed SIP message: a view into the bytes it came in, plus offsets.
 * Nothing is copied at parse time; strings are decoded only on request.
 * Offsets are relative to `buf`, which holds exactly this one message.
 */
export class SipMessage {
  readonly ok = true as const;
  readonly buf: Buffer;
  readonly isRequest: boolean;
  /** Request method, or the CSeq method of a response. */
  readonly method: string;
  /** Status code of a response, 0 for a request. */
  readonly status: number;
  readonly uriStart: number;
  readonly uriEnd: number;
  readonly cseq: number;
  readonly topVia: Via;
  /** Header table, one row per header line (folded lines included). */
  readonly headerCount: number;
  /** [id, lineStart, valueStart, valueEnd, lineEnd] per header; lineEnd is past its CRLF. */
  readonly rows: Int32Array;
  /** Offset of the CRLF that ends the header section. */
  readonly headersEnd: number;
  readonly bodyStart: number;
  readonly hasContentLength: boolean;

  constructor(f: {
    buf: Buffer;
    isRequest: boolean;
    method: string;
    status: number;
    uriStart: number;
    uriEnd: number;
    cseq: number;
    topVia: Via;
    headerCount: number;
    rows: Int32Array;
    headersEnd: number;
    bodyStart: number;
    hasContentLength: boolean;
  }) {
    this.buf = f.buf;
    this.isRequest = f.isRequest;
    this.method = f.method;
    this.status = f.status;
    this.uriStart = f.uriStart;
    this.uriEnd = f.uriEnd;
    this.cseq = f.cseq;
    this.topVia = f.topVia;
    this.headerCount = f.headerCount;
    this.rows = f.rows;
    this.headersEnd = f.headersEnd;
    this.bodyStart = f.bodyStart;
    this.hasContentLength = f.hasContentLength;
  }

  get bodyLength(): number {
    return this.buf.length - this.bodyStart;
  }

  /** Row of the first header with this id, or -1. */
  find(id: HdrId, from = 0): number {
    for (let i = from; i < this.headerCount; i++) if (this.rows[i * 5] === id) return i;
    return -1;
  }

  /** Raw value of header row `i` (folding kept), decoded as latin1 to keep bytes 1:1. */
  valueAt(i: number): string {
    return this.buf.toString('latin1', this.rows[i * 5 + 2], this.rows[i * 5 + 3]);
  }

  /** First value of a header, with folding turned into single spaces. */
  header(id: HdrId): string | undefined {
    const i = this.find(id);
    if (i < 0) return undefined;
    const v = this.valueAt(i);
    return v.includes('\r') ? v.replace(/\r\n[ \t]+/g, ' ') : v;
  }

  get callId(): string {
    return this.header(Hdr.CallId) ?? '';
  }

  get requestUri(): string {
    return this.buf.toString('latin1', this.uriStart, this.uriEnd);
  }

  /** Byte range [lineStart, lineEnd) of header row `i`, CRLF included. */
  lineRange(i: number): [number, number] {
    return [this.rows[i * 5 + 1] as number, this.rows[i * 5 + 4] as number];
  }
}
