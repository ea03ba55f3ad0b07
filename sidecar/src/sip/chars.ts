/** Byte classes of the SIP grammar (RFC 3261 25.1), as lookup tables. */

export const CR = 0x0d;
export const LF = 0x0a;
export const SP = 0x20;
export const HT = 0x09;
export const COLON = 0x3a;
export const SEMI = 0x3b;
export const COMMA = 0x2c;
export const DQUOTE = 0x22;
export const BACKSLASH = 0x5c;
export const LAQUOT = 0x3c;
export const RAQUOT = 0x3e;
export const EQUAL = 0x3d;
export const SLASH = 0x2f;

function table(chars: string, ranges: Array<[number, number]> = []): Uint8Array {
  const t = new Uint8Array(256);
  for (const c of chars) t[c.charCodeAt(0)] = 1;
  for (const [a, b] of ranges) for (let i = a; i <= b; i++) t[i] = 1;
  return t;
}

const ALNUM: Array<[number, number]> = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
];

/** token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") */
export const TOKEN = table("-.!%*_+`'~", ALNUM);

/** Characters allowed in a host or IP literal, plus ':' '[' ']' for IPv6 references. */
export const HOST = table('-.:[]', ALNUM);

/** URI scheme characters after the first letter. */
export const SCHEME = table('+-.', ALNUM);

/** Linear white space inside a (possibly folded) header value. */
export function isLws(b: number | undefined): boolean {
  return b === SP || b === HT || b === CR || b === LF;
}

export function isDigit(b: number | undefined): boolean {
  return b !== undefined && b >= 0x30 && b <= 0x39;
}

/** Offset of the next CRLF at or after `from`, or -1. memchr for CR, then check LF: no allocation. */
export function indexOfCrlf(b: Buffer, from: number): number {
  let i = b.indexOf(CR, from);
  while (i >= 0 && b[i + 1] !== LF) i = b.indexOf(CR, i + 1);
  return i;
}

/** Case-insensitive compare of b[s, e) with a lower-case ASCII word. */
export function equalsLower(b: Buffer, s: number, e: number, lower: string): boolean {
  if (e - s !== lower.length) return false;
  for (let i = 0; i < lower.length; i++) {
    const c = b[s + i] as number;
    const l = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
    if (l !== lower.charCodeAt(i)) return false;
  }
  return true;
}
