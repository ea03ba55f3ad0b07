/**
 * Header names the sidecar cares about, matched straight from the bytes of
 * the message (length first, ASCII lower-casing by bit) so no string is made
 * per header. Compact forms (RFC 3261 7.3.3 and later RFCs) map to the same id.
 * Every other header is `Hdr.Other` and stays raw bytes.
 */
export const Hdr = {
  Other: 0,
  Via: 1,
  From: 2,
  To: 3,
  CallId: 4,
  CSeq: 5,
  ContentLength: 6,
  MaxForwards: 7,
  Contact: 8,
  Route: 9,
  RecordRoute: 10,
  Expires: 11,
  Date: 12,
  RetryAfter: 13,
  Warning: 14,
  ContentType: 15,
  SiphaSource: 16,
  SiphaNextHop: 17,
  SiphaToken: 18,
} as const;
export type HdrId = (typeof Hdr)[keyof typeof Hdr];

/** Headers that may appear at most once (RFC 3261 20, and 4475 3.3.2/3.3.3). */
export const SINGLE_VALUED: ReadonlySet<HdrId> = new Set([
  Hdr.From,
  Hdr.To,
  Hdr.CallId,
  Hdr.CSeq,
  Hdr.ContentLength,
  Hdr.MaxForwards,
]);

const NAMES: ReadonlyArray<readonly [string, HdrId]> = [
  ['via', Hdr.Via],
  ['v', Hdr.Via],
  ['from', Hdr.From],
  ['f', Hdr.From],
  ['to', Hdr.To],
  ['t', Hdr.To],
  ['call-id', Hdr.CallId],
  ['i', Hdr.CallId],
  ['cseq', Hdr.CSeq],
  ['content-length', Hdr.ContentLength],
  ['l', Hdr.ContentLength],
  ['max-forwards', Hdr.MaxForwards],
  ['contact', Hdr.Contact],
  ['m', Hdr.Contact],
  ['route', Hdr.Route],
  ['record-route', Hdr.RecordRoute],
  ['expires', Hdr.Expires],
  ['date', Hdr.Date],
  ['retry-after', Hdr.RetryAfter],
  ['warning', Hdr.Warning],
  ['content-type', Hdr.ContentType],
  ['c', Hdr.ContentType],
  ['x-sipha-src', Hdr.SiphaSource],
  ['x-sipha-nh', Hdr.SiphaNextHop],
  ['x-sipha-token', Hdr.SiphaToken],
];

// byLength[n] lists the known names of n bytes, as lower-case byte arrays.
const byLength: Array<Array<{ bytes: Uint8Array; id: HdrId }>> = [];
for (const [name, id] of NAMES) {
  const list = byLength[name.length] ?? [];
  list.push({ bytes: Buffer.from(name, 'latin1'), id });
  byLength[name.length] = list;
}

/** Id of the header whose name is buf[start, end). */
export function headerId(buf: Uint8Array, start: number, end: number): HdrId {
  const candidates = byLength[end - start];
  if (candidates === undefined) return Hdr.Other;
  outer: for (const c of candidates) {
    const b = c.bytes;
    for (let i = 0; i < b.length; i++) {
      // `| 0x20` lower-cases ASCII letters; '-' (0x2d) is unchanged by it.
      if (((buf[start + i] as number) | 0x20) !== b[i]) continue outer;
    }
    return c.id;
  }
  return Hdr.Other;
}
