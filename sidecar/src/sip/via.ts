import { COLON, DQUOTE, EQUAL, equalsLower, isDigit, isLws, SEMI, SLASH, TOKEN } from './chars.ts';

/** One via-parm (RFC 3261 20.42, RFC 3581 rport), with offsets for in-place edits. */
export interface Via {
  /** Upper-case transport token: UDP, TCP, TLS, SCTP, WS... */
  readonly transport: string;
  readonly transportStart: number;
  readonly transportEnd: number;
  readonly host: string;
  /** 0 when the sent-by has no port. */
  readonly port: number;
  /** Offsets of the sent-by (host[:port]) for in-place edits. */
  readonly sentByStart: number;
  readonly sentByEnd: number;
  readonly branch: string | undefined;
  readonly received: string | undefined;
  /** True when an rport parameter is present, with or without a value. */
  readonly hasRport: boolean;
  /** Value of rport, 0 when absent or empty. */
  readonly rport: number;
  /** Offset just past the last byte of this via-parm (before any comma or CRLF). */
  readonly end: number;
}

const HOSTNAME = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._') HOSTNAME[c.charCodeAt(0)] = 1;

function skipLws(b: Buffer, p: number, end: number): number {
  while (p < end && isLws(b[p])) p++;
  return p;
}

function token(b: Buffer, p: number, end: number): number {
  while (p < end && TOKEN[b[p] as number] === 1) p++;
  return p;
}

/**
 * Parses buf[start, end) as one via-parm. Returns a string saying what is
 * wrong when it is not one (the caller turns that into a rejection).
 */
export function parseVia(b: Buffer, start: number, end: number): Via | string {
  let p = skipLws(b, start, end);
  let q = token(b, p, end);
  if (q - p !== 3 || b.toString('latin1', p, q).toUpperCase() !== 'SIP') return 'protocol name';
  p = skipLws(b, q, end);
  if (b[p] !== SLASH) return 'missing / after SIP';
  p = skipLws(b, p + 1, end);
  q = token(b, p, end);
  if (q === p) return 'protocol version';
  p = skipLws(b, q, end);
  if (b[p] !== SLASH) return 'missing / before transport';
  p = skipLws(b, p + 1, end);
  const transportStart = p;
  q = token(b, p, end);
  if (q === p) return 'transport';
  const transportEnd = q;
  const transport = transportName(b, p, q);
  p = skipLws(b, q, end);
  if (p === q) return 'no space before sent-by';

  // sent-by = host [ COLON port ]
  if (b[p] === 0x5b) {
    q = b.indexOf(0x5d, p);
    if (q < 0 || q >= end) return 'unterminated IPv6 reference';
    q++;
  } else {
    q = p;
    while (q < end && HOSTNAME[b[q] as number] === 1) q++;
  }
  if (q === p) return 'sent-by host';
  const sentByStart = p;
  const host = b.toString('latin1', p, q);
  let sentByEnd = q;
  p = skipLws(b, q, end);
  let port = 0;
  if (b[p] === COLON) {
    p = skipLws(b, p + 1, end);
    q = p;
    while (q < end && isDigit(b[q])) port = port * 10 + ((b[q++] as number) - 0x30);
    if (q === p || q - p > 5 || port > 65535) return 'sent-by port';
    sentByEnd = q;
    p = skipLws(b, q, end);
  }

  let branch: string | undefined;
  let received: string | undefined;
  let hasRport = false;
  let rport = 0;
  while (p < end) {
    if (b[p] !== SEMI) return 'expected ; between parameters';
    p = skipLws(b, p + 1, end);
    const ns = p;
    q = token(b, p, end);
    if (q === ns) return 'empty parameter';
    const nameLen = q - ns;
    p = skipLws(b, q, end);
    let vs = -1;
    let ve = -1;
    if (b[p] === EQUAL) {
      p = skipLws(b, p + 1, end);
      vs = p;
      if (b[p] === DQUOTE) {
        q = p + 1;
        while (q < end && b[q] !== DQUOTE) q += b[q] === 0x5c ? 2 : 1;
        if (q >= end) return 'unterminated quoted parameter';
        q++;
      } else {
        // gen-value = token / host; host may be an IPv6 reference with ':'
        q = p;
        while (q < end && (TOKEN[b[q] as number] === 1 || b[q] === COLON || b[q] === 0x5b || b[q] === 0x5d)) q++;
      }
      if (q === vs) return 'empty parameter value';
      ve = q;
      p = q;
    }
    const ne = ns + nameLen;
    if (equalsLower(b, ns, ne, 'branch')) {
      if (vs < 0) return 'branch without value';
      branch = b.toString('latin1', vs, ve);
    } else if (equalsLower(b, ns, ne, 'received')) {
      if (vs < 0) return 'received without value';
      received = b.toString('latin1', vs, ve);
    } else if (equalsLower(b, ns, ne, 'rport')) {
      hasRport = true;
      if (vs >= 0) {
        rport = 0;
        for (let i = vs; i < ve; i++) {
          if (!isDigit(b[i])) return 'rport value';
          rport = rport * 10 + ((b[i] as number) - 0x30);
        }
        if (ve - vs > 5 || rport > 65535) return 'rport value';
      }
    }
    p = skipLws(b, p, end);
  }
  return {
    transport,
    transportStart,
    transportEnd,
    host,
    port,
    sentByStart,
    sentByEnd,
    branch,
    received,
    hasRport,
    rport,
    end: skipBackLws(b, end, start),
  };
}

function skipBackLws(b: Buffer, p: number, floor: number): number {
  while (p > floor && isLws(b[p - 1])) p--;
  return p;
}

/** Transport token, upper-case; the common ones without allocating. */
function transportName(b: Buffer, s: number, e: number): string {
  if (equalsLower(b, s, e, 'udp')) return 'UDP';
  if (equalsLower(b, s, e, 'tcp')) return 'TCP';
  if (equalsLower(b, s, e, 'tls')) return 'TLS';
  return b.toString('latin1', s, e).toUpperCase();
}
