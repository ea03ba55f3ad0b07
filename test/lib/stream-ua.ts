/**
 * One scripted SIP user agent over TCP or TLS (Node's TLS: OpenSSL), as an
 * RFC 5626 phone behaves: it keeps one connection to its proxy, registers with
 * +sip.instance and reg-id, calls, answers requests inside its dialogs, and
 * when the connection dies it can connect again and re-register. Used by
 * sip-ua-main.ts (tests) and bench/lib/stream-callers-main.ts (benches).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import {
  all,
  branchOf,
  format,
  header,
  type Message,
  method,
  rand,
  reply,
  StreamFramer,
  sdp,
  status,
  uriIn,
} from './sip-lite.ts';

export interface StreamUaSpec {
  transport: 'tcp' | 'tls';
  proxy: string;
  port: number;
  user: string;
  domain: string;
  caFile?: string;
  /** A client certificate (tls.crt, tls.key) for mutual TLS. */
  certDir?: string;
  instance?: string;
}

interface Dialog {
  remoteTarget: string;
  routes: string[];
  to: string;
  from: string;
  cseq: number;
}

export class StreamUa {
  private socket: net.Socket | null = null;
  private cseq = 1;
  private readonly regCallId = `reg-${rand()}`;
  private readonly fromTag = rand();
  private readonly instance: string;
  private readonly waiting = new Map<string, (m: Message) => void>();
  readonly dialogs = new Map<string, Dialog>();
  private readonly spec: StreamUaSpec;
  private readonly ca: Buffer | undefined;
  /** Told of every request received (after it was answered) and of a connection that closed. */
  onRequest: (method: string, callId: string, inDialog: boolean) => void = () => {};
  onClosed: () => void = () => {};
  /** A message arrived carrying X-Sipha-* headers (its start line). */
  onLeak: (start: string) => void = () => {};

  constructor(spec: StreamUaSpec) {
    this.spec = spec;
    this.instance = spec.instance ?? `urn:uuid:${randomUUID()}`;
    this.ca = spec.caFile ? readFileSync(spec.caFile) : undefined;
  }

  get connected(): boolean {
    return this.socket !== null;
  }

  get local(): string {
    return `${this.socket?.localAddress}:${this.socket?.localPort}`;
  }

  /** `localPort`: connect from this port (a test of a port another client used before). */
  connect(timeoutMs = 5000, localPort?: number): Promise<void> {
    const { spec } = this;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        s.off('error', fail);
        this.socket = s;
        resolve();
      };
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      const s =
        spec.transport === 'tls'
          ? tls.connect(
              {
                host: spec.proxy,
                port: spec.port,
                ...(localPort !== undefined ? { localPort } : {}),
                ...(this.ca ? { ca: this.ca } : {}),
                ...(spec.certDir
                  ? { cert: readFileSync(join(spec.certDir, 'tls.crt')), key: readFileSync(join(spec.certDir, 'tls.key')) }
                  : {}),
                ...(/^[0-9.]+$/.test(spec.domain) ? {} : { servername: spec.domain }),
              },
              done,
            )
          : net.connect({ host: spec.proxy, port: spec.port, ...(localPort !== undefined ? { localPort } : {}) }, done);
      s.once('error', fail);
      const framer = new StreamFramer();
      s.on('data', (chunk: Buffer) => framer.push(chunk, (m) => this.onMessage(m)));
      s.on('error', () => {}); // 'close' follows
      s.on('close', () => {
        if (this.socket !== s) return;
        this.socket = null;
        this.onClosed();
      });
    });
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }

  private send(text: string): void {
    if (this.socket === null) throw new Error('not connected');
    this.socket.write(text);
  }

  private onMessage(m: Message): void {
    // The sidecar's link headers (X-Sipha-Src, the link token) must never reach a client.
    if (m.headers.some(([n]) => /^x-sipha-/i.test(n))) this.onLeak(m.start);
    const code = status(m);
    if (code > 0) {
      if (code >= 200) this.waiting.get(branchOf(m))?.(m);
      return;
    }
    const what = method(m);
    const callId = header(m, 'Call-ID') ?? '';
    const inDialog = this.dialogs.has(callId);
    if (what !== 'ACK') this.send(reply(m, inDialog || what === 'OPTIONS' ? '200 OK' : '481 Call/Transaction Does Not Exist'));
    if (what === 'BYE') this.dialogs.delete(callId);
    this.onRequest(what, callId, inDialog);
  }

  private transaction(lines: (branch: string) => string[], body = '', ms = 5000): Promise<Message> {
    const branch = `z9hG4bK-${rand()}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(branch);
        reject(new Error(`no final answer within ${ms} ms to ${lines(branch)[0]}`));
      }, ms);
      this.waiting.set(branch, (m) => {
        clearTimeout(timer);
        this.waiting.delete(branch);
        resolve(m);
      });
      try {
        this.send(format(lines(branch), body));
      } catch (err) {
        clearTimeout(timer);
        this.waiting.delete(branch);
        reject(err);
      }
    });
  }

  private via(branch: string): string {
    return `Via: SIP/2.0/${this.spec.transport.toUpperCase()} ${this.local};branch=${branch};rport`;
  }

  /** REGISTER on the current connection; resolves with the final status. */
  async register(expires = 600): Promise<number> {
    const { user, domain, transport } = this.spec;
    const m = await this.transaction((b) => [
      `REGISTER sip:${domain} SIP/2.0`,
      this.via(b),
      'Max-Forwards: 70',
      `From: <sip:${user}@${domain}>;tag=${this.fromTag}`,
      `To: <sip:${user}@${domain}>`,
      `Call-ID: ${this.regCallId}`,
      `CSeq: ${this.cseq++} REGISTER`,
      `Contact: <sip:${user}@${this.local};transport=${transport};ob>;+sip.instance="<${this.instance}>";reg-id=1`,
      'Supported: outbound, path',
      `Expires: ${expires}`,
    ]);
    return status(m);
  }

  /** INVITE `to`@domain; on 200 the dialog is kept and ACKed along its route set. */
  async invite(to: string, ms = 15000): Promise<{ status: number; callId: string }> {
    const { user, domain, transport } = this.spec;
    const callId = `call-${rand()}`;
    const from = `<sip:${user}@${domain}>;tag=${rand()}`;
    const ruri = `sip:${to}@${domain}`;
    const n = this.cseq++;
    const m = await this.transaction(
      (b) => [
        `INVITE ${ruri} SIP/2.0`,
        this.via(b),
        'Max-Forwards: 70',
        `From: ${from}`,
        `To: <${ruri}>`,
        `Call-ID: ${callId}`,
        `CSeq: ${n} INVITE`,
        `Contact: <sip:${user}@${this.local};transport=${transport}>`,
        'Content-Type: application/sdp',
      ],
      sdp(this.socket?.localAddress ?? '0.0.0.0'),
      ms,
    );
    const code = status(m);
    if (code === 200) {
      const d: Dialog = {
        remoteTarget: uriIn(header(m, 'Contact') ?? ''),
        routes: all(m, 'Record-Route').reverse(),
        to: header(m, 'To') ?? '',
        from,
        cseq: n,
      };
      this.dialogs.set(callId, d);
      this.send(format(this.inDialog('ACK', callId, d, `z9hG4bK-${rand()}`, n)));
    }
    return { status: code, callId };
  }

  private inDialog(what: string, callId: string, d: Dialog, branch: string, n: number): string[] {
    return [
      `${what} ${d.remoteTarget} SIP/2.0`,
      this.via(branch),
      'Max-Forwards: 70',
      ...d.routes.map((r) => `Route: ${r}`),
      `From: ${d.from}`,
      `To: ${d.to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${n} ${what}`,
    ];
  }

  /** BYE in dialog `callId`; resolves with the final status. */
  async bye(callId: string): Promise<number> {
    const d = this.dialogs.get(callId);
    if (!d) throw new Error(`no dialog ${callId}`);
    const n = ++d.cseq;
    const m = await this.transaction((b) => this.inDialog('BYE', callId, d, b, n));
    this.dialogs.delete(callId);
    return status(m);
  }
}
