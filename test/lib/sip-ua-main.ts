/**
 * A scripted SIP user agent over TCP or TLS (Node's TLS: OpenSSL), run as its
 * own process inside a bed host (sip-ua.ts drives it). It does what a phone
 * with RFC 5626 outbound does, one step per command: connect to its proxy,
 * register with +sip.instance and reg-id, call, answer requests inside its
 * dialogs, and when its connection dies, connect again and re-register.
 *
 * argv: JSON { transport, proxy, port, user, domain, caFile, instance, certDir? }
 * stdin: one JSON command per line { id, cmd, ... }; stdout: one JSON line per
 * answer { id, ok, ... } or event { event, ... }.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import readline from 'node:readline';
import tls from 'node:tls';

interface Spec {
  transport: 'tcp' | 'tls';
  proxy: string;
  port: number;
  user: string;
  domain: string;
  caFile?: string;
  instance: string;
  /** A client certificate (tls.crt, tls.key) for mutual TLS. */
  certDir?: string;
}

interface Message {
  start: string;
  headers: Array<[string, string]>;
  body: string;
}

const spec = JSON.parse(process.argv[2] as string) as Spec;
const VIA_T = spec.transport.toUpperCase();
let socket: net.Socket | null = null;
let buffered = Buffer.alloc(0);
let cseq = 1;
const regCallId = `reg-${randomBytes(6).toString('hex')}`;
const fromTag = randomBytes(4).toString('hex');
/** Final answers awaited, by branch. */
const waiting = new Map<string, (m: Message) => void>();
/** Established dialogs by Call-ID: what the ACK and BYE need. */
const dialogs = new Map<
  string,
  { remoteTarget: string; routes: string[]; to: string; from: string; cseq: number; lastInviteCseq: number }
>();

const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const rand = () => randomBytes(6).toString('hex');
const header = (m: Message, name: string) => m.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
const all = (m: Message, name: string) =>
  m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).flatMap(([, v]) => splitList(v));
const here = () => `${socket?.localAddress}:${socket?.localPort}`;
const contact = () => `<sip:${spec.user}@${here()};transport=${spec.transport};ob>;+sip.instance="<${spec.instance}>";reg-id=1`;

/** Splits a header value on commas outside <> and quotes. */
function splitList(v: string): string[] {
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

function uriIn(v: string): string {
  const lt = v.indexOf('<');
  return lt >= 0 ? v.slice(lt + 1, v.indexOf('>', lt)) : (v.split(';')[0] as string);
}

function connect(): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      s.off('error', reject);
      socket = s;
      out({ event: 'connected', local: here() });
      resolve();
    };
    const s =
      spec.transport === 'tls'
        ? tls.connect(
            {
              host: spec.proxy,
              port: spec.port,
              ...(spec.caFile ? { ca: readFileSync(spec.caFile) } : {}),
              ...(spec.certDir
                ? { cert: readFileSync(join(spec.certDir, 'tls.crt')), key: readFileSync(join(spec.certDir, 'tls.key')) }
                : {}),
              servername: /^[0-9.]+$/.test(spec.domain) ? undefined : spec.domain,
            },
            done,
          )
        : net.connect({ host: spec.proxy, port: spec.port }, done);
    s.once('error', reject);
    s.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        const m = nextMessage();
        if (m === null) break;
        onMessage(m);
      }
    });
    s.on('close', () => {
      if (socket === s) {
        socket = null;
        out({ event: 'closed' });
      }
    });
    s.on('error', (err) => out({ event: 'socket-error', message: err.message }));
  });
}

function nextMessage(): Message | null {
  while (buffered.length >= 2 && buffered[0] === 13 && buffered[1] === 10) buffered = buffered.subarray(2); // keepalive CRLF
  const end = buffered.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buffered.toString('latin1', 0, end).split('\r\n');
  const headers = head.slice(1).map((l): [string, string] => {
    const c = l.indexOf(':');
    return [l.slice(0, c).trim(), l.slice(c + 1).trim()];
  });
  const len = Number(headers.find(([n]) => /^(content-length|l)$/i.test(n))?.[1] ?? 0);
  if (buffered.length < end + 4 + len) return null;
  const body = buffered.toString('latin1', end + 4, end + 4 + len);
  buffered = buffered.subarray(end + 4 + len);
  return { start: head[0] as string, headers, body };
}

function send(lines: string[], body = ''): void {
  if (socket === null) throw new Error('not connected');
  socket.write(`${[...lines, `Content-Length: ${Buffer.byteLength(body)}`].join('\r\n')}\r\n\r\n${body}`);
}

function onMessage(m: Message): void {
  if (m.start.startsWith('SIP/2.0 ')) {
    const status = Number(m.start.split(' ')[1]);
    const via = header(m, 'Via') ?? header(m, 'v') ?? '';
    const branch = /branch=([^;,\s]+)/.exec(via)?.[1] ?? '';
    if (status >= 200) waiting.get(branch)?.(m);
    return;
  }
  const method = m.start.split(' ')[0] as string;
  const callId = header(m, 'Call-ID') ?? header(m, 'i') ?? '';
  out({ event: 'request', method, callId, dialog: dialogs.has(callId) });
  if (method === 'ACK') return;
  // Answer as a UAS: Vias, From, To, Call-ID, CSeq copied (RFC 3261 8.2.6).
  const copy = m.headers.filter(([n]) => /^(via|v|from|f|to|t|call-id|i|cseq)$/i.test(n)).map(([n, v]) => `${n}: ${v}`);
  const known = dialogs.has(callId) || method === 'OPTIONS';
  send([`SIP/2.0 ${known ? '200 OK' : '481 Call/Transaction Does Not Exist'}`, ...copy]);
  if (method === 'BYE') dialogs.delete(callId);
}

function transaction(lines: (branch: string) => string[], body = '', ms = 5000): Promise<Message> {
  const branch = `z9hG4bK-${rand()}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(branch);
      reject(new Error(`no final answer within ${ms} ms to ${lines(branch)[0]}`));
    }, ms);
    waiting.set(branch, (m) => {
      clearTimeout(timer);
      waiting.delete(branch);
      resolve(m);
    });
    send(lines(branch), body);
  });
}

const via = (branch: string) => `Via: SIP/2.0/${VIA_T} ${here()};branch=${branch};rport`;

async function register(expires: number): Promise<number> {
  const m = await transaction((b) => [
    `REGISTER sip:${spec.domain} SIP/2.0`,
    via(b),
    'Max-Forwards: 70',
    `From: <sip:${spec.user}@${spec.domain}>;tag=${fromTag}`,
    `To: <sip:${spec.user}@${spec.domain}>`,
    `Call-ID: ${regCallId}`,
    `CSeq: ${cseq++} REGISTER`,
    `Contact: ${contact()}`,
    'Supported: outbound, path',
    `Expires: ${expires}`,
  ]);
  return Number(m.start.split(' ')[1]);
}

async function invite(to: string): Promise<{ status: number; callId: string }> {
  const callId = `call-${rand()}`;
  const tag = rand();
  const from = `<sip:${spec.user}@${spec.domain}>;tag=${tag}`;
  const ruri = `sip:${to}@${spec.domain}`;
  const n = cseq++;
  const sdp = [
    'v=0',
    `o=- 1 1 IN IP4 ${socket?.localAddress}`,
    's=-',
    `c=IN IP4 ${socket?.localAddress}`,
    't=0 0',
    'm=audio 40000 RTP/AVP 0',
    'a=rtpmap:0 PCMU/8000',
    '',
  ].join('\r\n');
  const m = await transaction(
    (b) => [
      `INVITE ${ruri} SIP/2.0`,
      via(b),
      'Max-Forwards: 70',
      `From: ${from}`,
      `To: <${ruri}>`,
      `Call-ID: ${callId}`,
      `CSeq: ${n} INVITE`,
      `Contact: <sip:${spec.user}@${here()};transport=${spec.transport}>`,
      'Content-Type: application/sdp',
    ],
    sdp,
    15000,
  );
  const status = Number(m.start.split(' ')[1]);
  if (status === 200) {
    const d = {
      remoteTarget: uriIn(header(m, 'Contact') ?? header(m, 'm') ?? ''),
      routes: all(m, 'Record-Route').reverse(),
      to: header(m, 'To') ?? header(m, 't') ?? '',
      from,
      cseq: n,
      lastInviteCseq: n,
    };
    dialogs.set(callId, d);
    send([
      `ACK ${d.remoteTarget} SIP/2.0`,
      via(`z9hG4bK-${rand()}`),
      'Max-Forwards: 70',
      ...d.routes.map((r) => `Route: ${r}`),
      `From: ${from}`,
      `To: ${d.to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${n} ACK`,
    ]);
  }
  return { status, callId };
}

async function bye(callId: string): Promise<number> {
  const d = dialogs.get(callId);
  if (!d) throw new Error(`no dialog ${callId}`);
  const n = ++d.cseq;
  const m = await transaction((b) => [
    `BYE ${d.remoteTarget} SIP/2.0`,
    via(b),
    'Max-Forwards: 70',
    ...d.routes.map((r) => `Route: ${r}`),
    `From: ${d.from}`,
    `To: ${d.to}`,
    `Call-ID: ${callId}`,
    `CSeq: ${n} BYE`,
  ]);
  dialogs.delete(callId);
  return Number(m.start.split(' ')[1]);
}

async function run(c: { id: number; cmd: string; [k: string]: unknown }): Promise<object> {
  switch (c.cmd) {
    case 'connect':
      await connect();
      return { local: here() };
    case 'register':
      return { status: await register(Number(c.expires ?? 600)) };
    case 'invite':
      return await invite(String(c.to));
    case 'bye':
      return { status: await bye(String(c.callId)) };
    case 'close':
      socket?.destroy();
      socket = null;
      return {};
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const c = JSON.parse(line) as { id: number; cmd: string };
  run(c).then(
    (r) => out({ id: c.id, ok: true, ...r }),
    (err: Error) => out({ id: c.id, ok: false, error: err.message }),
  );
});
out({ event: 'ready' });
