/**
 * Just enough SIP for the scripted user agents of tests and benches
 * (sip-ua-main.ts, bench/lib/stream-callers-main.ts, bench/lib/far-end-main.ts):
 * framing on a stream, header lookup, route sets. The product's own parser
 * (sidecar/src/sip) is what is under test; these tools must not share it.
 */
import { randomBytes } from 'node:crypto';

export interface Message {
  start: string;
  headers: Array<[string, string]>;
  body: string;
}

const COMPACT: Record<string, string> = { via: 'v', from: 'f', to: 't', 'call-id': 'i', contact: 'm', 'content-length': 'l' };

export const rand = () => randomBytes(6).toString('hex');

/** The first value of a header (its compact form too). */
export function header(m: Message, name: string): string | undefined {
  const n = name.toLowerCase();
  const c = COMPACT[n];
  return m.headers.find(([h]) => h.toLowerCase() === n || h.toLowerCase() === c)?.[1];
}

/** Every value of a header, comma lists split. */
export function all(m: Message, name: string): string[] {
  const n = name.toLowerCase();
  return m.headers.filter(([h]) => h.toLowerCase() === n).flatMap(([, v]) => splitList(v));
}

export const status = (m: Message) => (m.start.startsWith('SIP/2.0 ') ? Number(m.start.split(' ')[1]) : 0);
export const method = (m: Message) => (m.start.startsWith('SIP/2.0 ') ? '' : (m.start.split(' ')[0] as string));
export const branchOf = (m: Message) => /branch=([^;,\s]+)/.exec(header(m, 'Via') ?? '')?.[1] ?? '';

/** Splits a header value on commas outside <> and quotes. */
export function splitList(v: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quoted = false;
  let from = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === '<') depth++;
    else if (!quoted && c === '>') depth--;
    else if (!quoted && depth === 0 && c === ',') {
      parts.push(v.slice(from, i).trim());
      from = i + 1;
    }
  }
  parts.push(v.slice(from).trim());
  return parts.filter((p) => p !== '');
}

/** The URI of a name-addr or addr-spec. */
export function uriIn(v: string): string {
  const lt = v.indexOf('<');
  return lt >= 0 ? v.slice(lt + 1, v.indexOf('>', lt)) : (v.split(';')[0] as string);
}

/** Parses one whole datagram (or null). */
export function parse(text: string): Message | null {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = text.slice(0, end).split('\r\n');
  const headers = head.slice(1).map((l): [string, string] => {
    const c = l.indexOf(':');
    return [l.slice(0, c).trim(), l.slice(c + 1).trim()];
  });
  return { start: head[0] as string, headers, body: text.slice(end + 4) };
}

/** Frames SIP messages out of a byte stream (Content-Length), skipping CRLF keepalives. */
export class StreamFramer {
  private buffered = Buffer.alloc(0);

  push(chunk: Buffer, each: (m: Message) => void): void {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    for (;;) {
      while (this.buffered.length >= 2 && this.buffered[0] === 13 && this.buffered[1] === 10)
        this.buffered = this.buffered.subarray(2);
      const end = this.buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = parse(this.buffered.toString('latin1', 0, end + 4)) as Message;
      const len = Number(header(m, 'Content-Length') ?? 0);
      if (this.buffered.length < end + 4 + len) return;
      m.body = this.buffered.toString('latin1', end + 4, end + 4 + len);
      this.buffered = this.buffered.subarray(end + 4 + len);
      each(m);
    }
  }
}

/** A message's text with Content-Length. */
export function format(lines: string[], body = ''): string {
  return `${[...lines, `Content-Length: ${Buffer.byteLength(body)}`].join('\r\n')}\r\n\r\n${body}`;
}

/** A response to request `m` (Vias, From, To, Call-ID, CSeq copied: RFC 3261 8.2.6). */
export function reply(m: Message, code: string, extra: string[] = [], toTag?: string): string {
  const copy = m.headers
    .filter(([n]) => /^(via|v|from|f|to|t|call-id|i|cseq)$/i.test(n))
    .map(([n, v]) => (toTag && /^(to|t)$/i.test(n) && !/;tag=/.test(v) ? `${n}: ${v};tag=${toTag}` : `${n}: ${v}`));
  return format([`SIP/2.0 ${code}`, ...copy, ...extra]);
}

export function sdp(ip: string): string {
  return [
    'v=0',
    `o=- 1 1 IN IP4 ${ip}`,
    's=-',
    `c=IN IP4 ${ip}`,
    't=0 0',
    'm=audio 40000 RTP/AVP 0',
    'a=rtpmap:0 PCMU/8000',
    '',
  ].join('\r\n');
}
