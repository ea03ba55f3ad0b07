/**
 * npm run bench -- sip-parse
 * The sidecar's zero-copy scanner against the `sip` npm package (sip.js) on
 * the same corpus: REGISTER, INVITE with SDP, 180, 200 with SDP, BYE.
 * Figures: messages per second (median of rounds) and bytes allocated per
 * message (heap growth over a batch with a young generation large enough
 * that no GC runs inside it).
 */
import { createRequire } from 'node:module';
import { parseMessage } from '../sidecar/src/sip/scanner.ts';
import { median, round, table, writeFigures } from './lib/report.ts';

const require = createRequire(import.meta.url);
const sip = require('sip') as { parse(b: Buffer): unknown };

const SDP =
  'v=0\r\no=alice 2890844526 2890844526 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n';
const common = (method: string, cseq: number) => [
  'Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK776asdhds;rport',
  'Max-Forwards: 70',
  'From: "Alice" <sip:alice@198.18.0.1>;tag=1928301774',
  'To: <sip:bob@198.18.0.1>',
  'Call-ID: a84b4c76e66710@198.18.0.10',
  `CSeq: ${cseq} ${method}`,
  'Contact: <sip:alice@198.18.0.10:5060>',
  'User-Agent: sipha-bench/1.0',
];
const resp = (status: string, extra: string[], body = '') =>
  Buffer.from(
    [
      `SIP/2.0 ${status}`,
      'Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=198.18.0.10',
      'Record-Route: <sip:198.18.0.1:5060;lr;ftag=1928301774>',
      'From: "Alice" <sip:alice@198.18.0.1>;tag=1928301774',
      'To: <sip:bob@198.18.0.1>;tag=a6c85cf',
      'Call-ID: a84b4c76e66710@198.18.0.10',
      'CSeq: 1 INVITE',
      'Contact: <sip:bob@198.18.0.20:5060>',
      ...extra,
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ].join('\r\n'),
  );
const CORPUS: Array<[string, Buffer]> = [
  [
    'REGISTER',
    Buffer.from(
      [`REGISTER sip:198.18.0.1 SIP/2.0`, ...common('REGISTER', 1), 'Expires: 3600', 'Content-Length: 0', '', ''].join('\r\n'),
    ),
  ],
  [
    'INVITE+SDP',
    Buffer.from(
      [
        `INVITE sip:bob@198.18.0.1 SIP/2.0`,
        ...common('INVITE', 1),
        'Content-Type: application/sdp',
        `Content-Length: ${SDP.length}`,
        '',
        SDP,
      ].join('\r\n'),
    ),
  ],
  ['180', resp('180 Ringing', [])],
  ['200+SDP', resp('200 OK', ['Content-Type: application/sdp'], SDP)],
  [
    'BYE',
    Buffer.from(
      [
        `BYE sip:bob@198.18.0.20:5060 SIP/2.0`,
        ...common('BYE', 2),
        'Route: <sip:198.18.0.1:5060;lr>',
        'Content-Length: 0',
        '',
        '',
      ].join('\r\n'),
    ),
  ],
];

// Both must accept the whole corpus, or the comparison means nothing.
for (const [name, b] of CORPUS) {
  const ours = parseMessage(b);
  if (!ours.ok) throw new Error(`scanner rejects ${name}: ${ours.detail}`);
  if (sip.parse(b) === undefined) throw new Error(`sip.js rejects ${name}`);
}

type Parser = (b: Buffer) => unknown;
const parsers: Array<[string, Parser]> = [
  ['sip.js (npm sip 0.0.6)', (b) => sip.parse(b)],
  ['sipha scanner', (b) => parseMessage(b)],
  [
    'sipha scanner + fields a proxy reads',
    (b) => {
      const m = parseMessage(b);
      if (m.ok) return [m.callId, m.topVia.branch, m.requestUri, m.cseq];
      return m;
    },
  ],
];

let sink = 0;
function rate(parse: Parser, msgs: Buffer[], ms: number): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < ms) {
    for (let i = 0; i < 1000; i++) {
      if (parse(msgs[i % msgs.length] as Buffer) !== undefined) sink++;
    }
    n += 1000;
    now = performance.now();
  }
  return (n / (now - start)) * 1000;
}

function bytesPerMessage(parse: Parser, msgs: Buffer[]): number {
  const samples: number[] = [];
  for (let r = 0; r < 5; r++) {
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    const n = 20000;
    const keep: unknown[] = []; // kept alive so nothing is collected mid-batch
    for (let i = 0; i < n; i++) keep.push(parse(msgs[i % msgs.length] as Buffer));
    samples.push((process.memoryUsage().heapUsed - before) / n);
    sink += keep.length;
  }
  return median(samples);
}

const results: Record<string, { perType: number[]; mixed: number; alloc: number }> = {};
for (const [, parse] of parsers)
  rate(
    parse,
    CORPUS.map((c) => c[1]),
    300,
  ); // warm-up
const ROUNDS = 7;
for (const [name, parse] of parsers) {
  const perType = CORPUS.map(([, b]) => {
    const rs: number[] = [];
    for (let r = 0; r < ROUNDS; r++) rs.push(rate(parse, [b], 150));
    return median(rs);
  });
  const mixedRounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++)
    mixedRounds.push(
      rate(
        parse,
        CORPUS.map((c) => c[1]),
        200,
      ),
    );
  results[name] = {
    perType,
    mixed: median(mixedRounds),
    alloc: bytesPerMessage(
      parse,
      CORPUS.map((c) => c[1]),
    ),
  };
}

const base = results[parsers[0]?.[0] as string] as (typeof results)[string];
const ours = results[parsers[1]?.[0] as string] as (typeof results)[string];
const oursFields = results[parsers[2]?.[0] as string] as (typeof results)[string];
table(
  `SIP parse, msgs/s (median of ${ROUNDS} rounds; one core, node ${process.version})`,
  ['message', 'sip.js', 'sipha', 'sipha+fields', 'sipha/sip.js'],
  CORPUS.map(([n], i) => [
    n,
    base.perType[i] as number,
    ours.perType[i] as number,
    oursFields.perType[i] as number,
    (ours.perType[i] as number) / (base.perType[i] as number),
  ]),
);
table(
  'mixed corpus',
  ['', 'sip.js', 'sipha', 'sipha+fields', 'sipha/sip.js'],
  [
    ['msgs/s', base.mixed, ours.mixed, oursFields.mixed, ours.mixed / base.mixed],
    ['heap bytes/msg', base.alloc, ours.alloc, oursFields.alloc, ours.alloc / base.alloc],
  ],
);
if (sink < 0) console.log(sink);

writeFigures('sip-parse', {
  sipjs_msgs_per_s: Math.round(base.mixed),
  sipha_msgs_per_s: Math.round(ours.mixed),
  sipha_with_fields_msgs_per_s: Math.round(oursFields.mixed),
  speedup: round(ours.mixed / base.mixed),
  sipjs_bytes_per_msg: Math.round(base.alloc),
  sipha_bytes_per_msg: Math.round(ours.alloc),
  sipha_with_fields_bytes_per_msg: Math.round(oursFields.alloc),
  ...Object.fromEntries(
    CORPUS.flatMap(([n], i) => [
      [`sipjs_${n.toLowerCase().replace(/[^a-z0-9]+/g, '_')}_msgs_per_s`, Math.round(base.perType[i] as number)],
      [`sipha_${n.toLowerCase().replace(/[^a-z0-9]+/g, '_')}_msgs_per_s`, Math.round(ours.perType[i] as number)],
    ]),
  ),
});
