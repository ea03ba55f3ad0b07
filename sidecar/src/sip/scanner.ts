/**
 * Zero-copy SIP scanner: one pass over the bytes of a message, recording
 * offsets; strict where RFC 4475 says a parser must refuse a message.
 * Failures are returned as values (see reasons.ts): nothing here throws on
 * bad input, so one bad datagram can never take the sidecar down.
 */
import { COLON, CR, equalsLower, HT, indexOfCrlf, isLws, LF, SP, TOKEN } from './chars.ts';
import {
  checkDate,
  checkDeltaSeconds,
  checkNameAddr,
  checkRequestUri,
  checkWarning,
  lwsEnd,
  lwsStart,
  parseCSeq,
  parseUint,
  splitComma,
} from './fields.ts';
import { Hdr, type HdrId, headerId, SINGLE_VALUED } from './headers.ts';
import { SipMessage } from './message.ts';
import { type Rejection, reject } from './reasons.ts';
import { parseVia, type Via } from './via.ts';

export interface ParseOptions {
  /** Largest message accepted, in bytes. */
  maxBytes?: number;
  /** Stream transports frame by Content-Length, so it must be there. */
  requireContentLength?: boolean;
}

export const DEFAULT_MAX_BYTES = 65535;
const MAX_HEADERS = 512;

// Scratch space reused across calls; copied to right-sized arrays at the end.
// Row per header: [id, lineStart, valueStart, valueEnd, lineEnd].
const ROW = 5;
const scratch = new Int32Array(MAX_HEADERS * ROW);

function isVersion(b: Buffer, s: number, e: number): boolean {
  return equalsLower(b, s, e, 'sip/2.0');
}

/** Parses one SIP message from `input` (a datagram, or one framed stream message). */
export function parseMessage(input: Buffer, opts: ParseOptions = {}): SipMessage | Rejection {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  // RFC 3261 7.5: CRLFs before the start line are ignored (also keep-alives).
  let start = 0;
  while (start < input.length && (input[start] === CR || input[start] === LF)) start++;
  if (start === input.length) return reject('empty', 'no bytes besides CRLF');
  if (input.length - start > maxBytes) return reject('too-large', `${input.length - start} bytes > ${maxBytes}`);
  const b = start === 0 ? input : input.subarray(start);
  const len = b.length;

  // ---- start line ----
  const lineEnd = indexOfCrlf(b, 0);
  if (lineEnd < 0) return reject('truncated', 'no CRLF after the start line');
  let isRequest: boolean;
  let method = '';
  let status = 0;
  let uriStart = 0;
  let uriEnd = 0;
  if (lineEnd >= 8 && isVersion(b, 0, 7) && b[7] === SP) {
    isRequest = false;
    let p = 8;
    while (p < lineEnd && b[p] !== SP) p++;
    status = parseUint(b, 8, p, 699);
    if (p - 8 !== 3 || status < 100) return reject('status-code', 'status code is not 3 digits 100-699');
  } else {
    isRequest = true;
    const sp1 = b.indexOf(SP, 0);
    if (sp1 <= 0 || sp1 > lineEnd) return reject('start-line', 'request line has no SP');
    for (let i = 0; i < sp1; i++) {
      if (TOKEN[b[i] as number] !== 1) return reject('method', 'method is not a token');
    }
    method = b.toString('latin1', 0, sp1);
    const sp2 = b.indexOf(SP, sp1 + 1);
    if (sp2 < 0 || sp2 > lineEnd) return reject('start-line', 'request line has one SP');
    uriStart = sp1 + 1;
    uriEnd = sp2;
    const bad = checkRequestUri(b, uriStart, uriEnd);
    if (bad !== null) return reject('request-uri', bad);
    if (b.indexOf(SP, sp2 + 1) >= 0 && b.indexOf(SP, sp2 + 1) < lineEnd)
      return reject('request-uri', 'more than two SP in the request line');
    if (!isVersion(b, sp2 + 1, lineEnd)) return reject('version', 'not SIP/2.0');
  }

  // ---- headers ----
  let count = 0;
  let p = lineEnd + 2;
  let headersEnd = -1;
  let contentLength = -1;
  let seen = 0; // bit per single-valued header id already seen
  while (p < len) {
    if (b[p] === CR && b[p + 1] === LF) {
      headersEnd = p;
      break;
    }
    let e = indexOfCrlf(b, p);
    if (e < 0) return reject('truncated', 'header line without CRLF');
    // Folded lines (LWS = [*WSP CRLF] 1*WSP) continue the same header.
    while (b[e + 2] === SP || b[e + 2] === HT) {
      e = indexOfCrlf(b, e + 2);
      if (e < 0) return reject('truncated', 'folded header line without CRLF');
    }
    let q = p;
    while (q < e && TOKEN[b[q] as number] === 1) q++;
    if (q === p) return reject('header-syntax', 'header line does not start with a name');
    const id = headerId(b, p, q);
    let v = q;
    while (v < e && (b[v] === SP || b[v] === HT)) v++;
    if (b[v] !== COLON) return reject('header-syntax', 'no colon after header name');
    const vs = lwsStart(b, v + 1, e);
    const ve = lwsEnd(b, vs, e);
    if (count === MAX_HEADERS) return reject('too-many-headers', `more than ${MAX_HEADERS} headers`);
    if (SINGLE_VALUED.has(id)) {
      if (seen & (1 << id)) return reject('duplicate-header', `duplicate ${b.toString('latin1', p, q)}`);
      seen |= 1 << id;
    }
    const o = count * ROW;
    scratch[o] = id;
    scratch[o + 1] = p;
    scratch[o + 2] = vs;
    scratch[o + 3] = ve;
    scratch[o + 4] = e + 2;
    count++;
    if (id === Hdr.ContentLength) {
      contentLength = parseUint(b, vs, ve, 0x7fffffff);
      if (contentLength < 0) return reject('content-length', 'Content-Length is not a non-negative integer');
    }
    p = e + 2;
  }
  if (headersEnd < 0) return reject('truncated', 'no empty line after the headers');

  // ---- body: Content-Length frames it; without one (UDP only) the rest is body ----
  const bodyStart = headersEnd + 2;
  let end = len;
  if (contentLength >= 0) {
    if (bodyStart + contentLength > len) return reject('content-length', 'Content-Length larger than the body');
    end = bodyStart + contentLength;
  } else if (opts.requireContentLength) {
    return reject('content-length', 'no Content-Length on a stream transport');
  }

  // ---- per-header checks, now that the table is known ----
  let cseq = -1;
  let cseqMethodStart = 0;
  let cseqMethodEnd = 0;
  let topVia: Via | undefined;
  for (let i = 0; i < count; i++) {
    const id = scratch[i * ROW] as HdrId;
    if (id === Hdr.Other) continue;
    const vs = scratch[i * ROW + 2] as number;
    const ve = scratch[i * ROW + 3] as number;
    const bad = checkHeader(b, id, vs, ve);
    if (bad !== null) return bad;
    if (id === Hdr.CSeq) {
      const r = parseCSeq(b, vs, ve);
      if (typeof r === 'string') return reject('cseq', r);
      [cseq, cseqMethodStart, cseqMethodEnd] = r;
    } else if (id === Hdr.Via && topVia === undefined) {
      let problem: string | null = null;
      splitComma(b, vs, ve, (s, e) => {
        const r = parseVia(b, s, e);
        if (typeof r === 'string') problem = r;
        else topVia = r;
        return false; // only the first value is needed here
      });
      if (problem !== null) return reject('via', problem);
      if (topVia === undefined) return reject('via', 'empty Via');
    }
  }
  if (topVia === undefined) return reject('missing-header', 'no Via');
  if (cseq < 0) return reject('missing-header', 'no CSeq');
  const need = (1 << Hdr.From) | (1 << Hdr.To) | (1 << Hdr.CallId);
  if ((seen & need) !== need) return reject('missing-header', 'From, To and Call-ID are required');
  if (
    isRequest &&
    (cseqMethodEnd - cseqMethodStart !== method.length || b.compare(b, 0, method.length, cseqMethodStart, cseqMethodEnd) !== 0)
  )
    return reject('cseq', 'CSeq method differs from the request method');

  return new SipMessage({
    buf: end === len ? b : b.subarray(0, end),
    isRequest,
    method: isRequest ? method : b.toString('latin1', cseqMethodStart, cseqMethodEnd),
    status,
    uriStart,
    uriEnd,
    cseq,
    topVia,
    headerCount: count,
    rows: scratch.slice(0, count * ROW),
    headersEnd,
    bodyStart,
    hasContentLength: contentLength >= 0,
  });
}

/** Value checks for the headers the sidecar knows; null when fine. */
function checkHeader(b: Buffer, id: HdrId, vs: number, ve: number): Rejection | null {
  let bad: string | null = null;
  switch (id) {
    case Hdr.From:
    case Hdr.To:
      bad = checkNameAddr(b, vs, ve, false);
      return bad === null ? null : reject('name-addr', bad);
    case Hdr.Contact:
    case Hdr.Route:
    case Hdr.RecordRoute: {
      const star = id === Hdr.Contact;
      const ok = splitComma(b, vs, ve, (s, e) => {
        bad = checkNameAddr(b, s, e, star);
        return bad === null;
      });
      if (!ok && bad === null) bad = 'unbalanced quotes or <>';
      return bad === null ? null : reject(star ? (bad.includes('range') ? 'scalar-range' : 'name-addr') : 'name-addr', bad);
    }
    case Hdr.MaxForwards: {
      const s = lwsStart(b, vs, ve);
      const e = lwsEnd(b, s, ve);
      return parseUint(b, s, e, 255) < 0 ? reject('max-forwards', 'Max-Forwards is not 0-255') : null;
    }
    case Hdr.Expires:
      bad = checkDeltaSeconds(b, vs, ve, false);
      return bad === null ? null : reject('scalar-range', `Expires: ${bad}`);
    case Hdr.RetryAfter:
      bad = checkDeltaSeconds(b, vs, ve, true);
      return bad === null ? null : reject('scalar-range', `Retry-After: ${bad}`);
    case Hdr.Warning: {
      splitComma(b, vs, ve, (s, e) => {
        bad = checkWarning(b, s, e);
        return bad === null;
      });
      return bad === null ? null : reject('scalar-range', bad);
    }
    case Hdr.Date:
      bad = checkDate(b, vs, ve);
      return bad === null ? null : reject('date', bad);
    case Hdr.CallId: {
      if (vs === ve) return reject('missing-header', 'empty Call-ID');
      for (let i = vs; i < ve; i++) if (isLws(b[i])) return reject('header-syntax', 'Call-ID contains LWS');
      return null;
    }
    default:
      return null;
  }
}
