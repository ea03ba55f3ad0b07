/**
 * Checks of individual header values that RFC 4475 expects a parser to
 * enforce. Each returns null when the value is fine, or what is wrong.
 */
import { BACKSLASH, COMMA, DQUOTE, EQUAL, equalsLower, isDigit, isLws, LAQUOT, RAQUOT, SCHEME, SEMI, TOKEN } from './chars.ts';

const U32_MAX = 4294967295;

/** Parses buf[s, e) as 1*DIGIT within [0, max]; -1 when it is not. */
export function parseUint(b: Buffer, s: number, e: number, max: number): number {
  if (s >= e || e - s > 16) return -1;
  let n = 0;
  for (let i = s; i < e; i++) {
    const c = b[i] as number;
    if (c < 0x30 || c > 0x39) return -1;
    n = n * 10 + (c - 0x30);
  }
  return n <= max ? n : -1;
}

/** First non-LWS offset in [s, e). Two scalar helpers instead of a tuple: no allocation per header. */
export function lwsStart(b: Buffer, s: number, e: number): number {
  while (s < e && isLws(b[s])) s++;
  return s;
}

/** One past the last non-LWS offset in [s, e). */
export function lwsEnd(b: Buffer, s: number, e: number): number {
  while (e > s && isLws(b[e - 1])) e--;
  return e;
}

/**
 * Splits a header value at top-level commas (not inside quotes or <>).
 * Calls `each(start, end)` per element; returns false if quoting is unbalanced.
 */
export function splitComma(b: Buffer, s: number, e: number, each: (start: number, end: number) => boolean): boolean {
  let inQuote = false;
  let inAngle = false;
  let from = s;
  for (let i = s; i < e; i++) {
    const c = b[i];
    if (inQuote) {
      if (c === BACKSLASH) i++;
      else if (c === DQUOTE) inQuote = false;
    } else if (c === DQUOTE) inQuote = true;
    else if (c === LAQUOT) inAngle = true;
    else if (c === RAQUOT) inAngle = false;
    else if (c === COMMA && !inAngle) {
      if (!each(from, i)) return false;
      from = i + 1;
    }
  }
  if (inQuote || inAngle) return false;
  return each(from, e);
}

/** CSeq = 1*DIGIT LWS Method; returns [number, methodStart, methodEnd] or a problem. */
export function parseCSeq(b: Buffer, s: number, e: number): [number, number, number] | string {
  s = lwsStart(b, s, e);
  e = lwsEnd(b, s, e);
  let p = s;
  while (p < e && isDigit(b[p])) p++;
  const num = parseUint(b, s, p, 2147483647);
  if (num < 0) return 'sequence number is not a 32-bit integer below 2**31';
  const ws = p;
  while (p < e && isLws(b[p])) p++;
  if (p === ws) return 'no space between number and method';
  const ms = p;
  while (p < e && TOKEN[b[p] as number] === 1) p++;
  if (p === ms || p !== e) return 'method is not a token';
  return [num, ms, p];
}

/** Generic parameters after a value: *( SEMI name [ EQUAL value ] ). */
function checkParams(b: Buffer, p: number, e: number, expiresMax: boolean): string | null {
  while (p < e) {
    while (p < e && isLws(b[p])) p++;
    if (p >= e) return null;
    if (b[p] !== SEMI) return 'expected ; before parameter';
    p++;
    while (p < e && isLws(b[p])) p++;
    const ns = p;
    while (p < e && TOKEN[b[p] as number] === 1) p++;
    if (p === ns) return 'empty parameter';
    const isExpires = expiresMax && equalsLower(b, ns, p, 'expires');
    while (p < e && isLws(b[p])) p++;
    if (b[p] === EQUAL) {
      p++;
      while (p < e && isLws(b[p])) p++;
      const vs = p;
      if (b[p] === DQUOTE) {
        p++;
        while (p < e && b[p] !== DQUOTE) p += b[p] === BACKSLASH ? 2 : 1;
        if (p >= e) return 'unterminated quoted parameter';
        p++;
      } else {
        while (p < e && (TOKEN[b[p] as number] === 1 || b[p] === 0x3a || b[p] === 0x5b || b[p] === 0x5d)) p++;
      }
      if (p === vs) return 'empty parameter value';
      if (isExpires && parseUint(b, vs, p, U32_MAX) < 0) return 'expires parameter out of range';
    }
  }
  return null;
}

function hasScheme(b: Buffer, s: number, e: number): boolean {
  const c = b[s] as number;
  if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a))) return false;
  for (let i = s + 1; i < e; i++) {
    if (b[i] === 0x3a) return i + 1 < e;
    if (SCHEME[b[i] as number] !== 1) return false;
  }
  return false;
}

/**
 * name-addr / addr-spec of From, To, Contact, Route, Record-Route
 * (RFC 3261 20.10, 25.1): quoted or token display name, no LWS inside <>,
 * and an addr-spec outside <> may not carry '?' headers.
 */
export function checkNameAddr(b: Buffer, s: number, e: number, allowStar: boolean): string | null {
  s = lwsStart(b, s, e);
  e = lwsEnd(b, s, e);
  if (s >= e) return 'empty value';
  if (allowStar && e - s === 1 && b[s] === 0x2a) return null;
  let p = s;
  let laquot = -1;
  if (b[p] === DQUOTE) {
    p++;
    while (p < e && b[p] !== DQUOTE) p += b[p] === BACKSLASH ? 2 : 1;
    if (p >= e) return 'unterminated quoted display name';
    p++;
    while (p < e && isLws(b[p])) p++;
    if (b[p] !== LAQUOT) return 'quoted display name not followed by <';
    laquot = p;
  } else {
    // Either "token *(LWS token) <uri>" or a bare addr-spec.
    const lt = b.indexOf(LAQUOT, p);
    if (lt >= 0 && lt < e) {
      for (let i = p; i < lt; i++) {
        if (TOKEN[b[i] as number] !== 1 && !isLws(b[i])) return 'display name is neither a token list nor quoted';
      }
      laquot = lt;
    }
  }
  if (laquot >= 0) {
    const gt = b.indexOf(RAQUOT, laquot);
    if (gt < 0 || gt >= e) return 'unterminated <';
    const us = laquot + 1;
    if (gt === us) return 'empty URI';
    for (let i = us; i < gt; i++) {
      const c = b[i] as number;
      if (c <= 0x20 || c === LAQUOT || c === DQUOTE) return 'white space or < inside <>';
    }
    if (!hasScheme(b, us, gt)) return 'URI without scheme';
    return checkParams(b, gt + 1, e, allowStar);
  }
  // addr-spec alone: parameters after ';' belong to the header, and the
  // URI itself may contain no LWS, '?', ',' or '<'.
  let ue = p;
  while (ue < e && b[ue] !== SEMI && !isLws(b[ue])) {
    const c = b[ue] as number;
    if (c < 0x20 || c === 0x3f || c === COMMA || c === RAQUOT) return 'addr-spec needs <> (contains ?, , or >)';
    ue++;
  }
  if (!hasScheme(b, p, ue)) return 'URI without scheme';
  let after = ue;
  while (after < e && isLws(b[after])) after++;
  if (after < e && b[after] !== SEMI) return 'addr-spec needs <> (contains LWS)';
  return checkParams(b, after, e, allowStar);
}

/** Request-URI: a scheme, no <> or LWS, and for sip/sips no '?' headers (RFC 3261 19.1.1). */
export function checkRequestUri(b: Buffer, s: number, e: number): string | null {
  if (s >= e) return 'empty Request-URI';
  if (!hasScheme(b, s, e)) return 'Request-URI without scheme';
  let sip = false;
  const c3 = (b[s + 3] as number) | 0x20;
  if (((b[s] as number) | 0x20) === 0x73 && ((b[s + 1] as number) | 0x20) === 0x69 && ((b[s + 2] as number) | 0x20) === 0x70) {
    sip = b[s + 3] === 0x3a || (c3 === 0x73 && b[s + 4] === 0x3a);
  }
  // '?' may appear in the user part (RFC 3261 25.1 user-unreserved); after
  // the host it starts URI headers, which a Request-URI may not carry.
  const at = b.indexOf(0x40, s);
  const hostFrom = at >= 0 && at < e ? at : s;
  for (let i = s; i < e; i++) {
    const c = b[i] as number;
    if (c <= 0x20 || c === 0x7f || c === LAQUOT || c === RAQUOT || c === DQUOTE)
      return 'Request-URI contains LWS, CTL, quote or <>';
    if (sip && c === 0x3f && i > hostFrom) return 'SIP Request-URI carries ?headers';
  }
  return null;
}

/** Date must be an RFC 1123 date in GMT (RFC 3261 20.17). */
export function checkDate(b: Buffer, s: number, e: number): string | null {
  s = lwsStart(b, s, e);
  e = lwsEnd(b, s, e);
  if (e - s < 3 || b[e - 3] !== 0x47 || b[e - 2] !== 0x4d || b[e - 1] !== 0x54) return 'Date not in GMT';
  return null;
}

/** Expires / Retry-After: delta-seconds below 2**32 (RFC 3261 20.19, 20.33). */
export function checkDeltaSeconds(b: Buffer, s: number, e: number, leadingOnly: boolean): string | null {
  s = lwsStart(b, s, e);
  e = lwsEnd(b, s, e);
  let p = s;
  while (p < e && isDigit(b[p])) p++;
  if (!leadingOnly && p !== e) return 'not delta-seconds';
  if (parseUint(b, s, p, U32_MAX) < 0) return 'delta-seconds out of range';
  return null;
}

/** Warning = 3DIGIT SP agent SP text, per value (RFC 3261 20.43). */
export function checkWarning(b: Buffer, s: number, e: number): string | null {
  s = lwsStart(b, s, e);
  e = lwsEnd(b, s, e);
  for (let i = 0; i < 3; i++) if (!isDigit(b[s + i])) return 'warn-code is not 3 digits';
  if (b[s + 3] !== 0x20) return 'warn-code is not 3 digits';
  return null;
}
