/**
 * baresip (Debian's package), a real softphone, in a bed host. sipp sends
 * in-dialog requests where its scenario says; a phone follows the Record-Route
 * set exactly (transport included) and keeps its connections, which is what a
 * failover must survive (FIELD-NOTES). Controlled over ctrl_tcp: netstrings
 * carrying JSON commands, responses and events.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Host, NetBed } from './netbed.ts';
import { until, watchOutput } from './procs.ts';

export interface BaresipSpec {
  /** AOR user part; the AOR's host is `registrar`. */
  user: string;
  /** The proxy and registrar, e.g. the VIP. */
  registrar: string;
  transport: 'udp' | 'tcp' | 'tls';
  /** TLS: the CA the proxy's certificate is checked against (baresip's sip_cafile). */
  caFile?: string;
  /** SIP port (TLS would take port + 1: keep that one free too). */
  sipPort?: number;
  ctrlPort?: number;
  answer?: 'auto' | 'manual';
  /** Registration interval, s. */
  regint?: number;
}

/** One ctrl_tcp event, e.g. `{ type: 'CALL_ESTABLISHED', class: 'call', param: ... }`. */
export interface BaresipEvent {
  type: string;
  class?: string;
  param?: string;
  peeruri?: string;
  id?: string;
  /** When the test process received it (ms since epoch). */
  at: number;
}

export interface Baresip {
  readonly child: ChildProcess;
  readonly aor: string;
  readonly output: () => string;
  /** Every event received so far, in order. */
  readonly events: BaresipEvent[];
  /** Resolves with the first event of `type` at index >= `from`; rejects after `ms` with the events seen. */
  waitEvent(type: string, ms: number, from?: number): Promise<BaresipEvent>;
  /** Runs a menu command (e.g. "dial", "hangup", "listcalls"); resolves with its text, rejects when not ok. */
  command(name: string, params?: string): Promise<string>;
  dial(uri: string): Promise<string>;
  hangup(): Promise<string>;
  /** The registration table ("--- User Agents ---"), colours removed. */
  reginfo(): Promise<string>;
  /** Resolves once the account's registration is OK; rejects after `ms` with what reginfo said. */
  waitRegistered(ms: number): Promise<void>;
  stop(): Promise<void>;
}

/** A stdio <-> TCP bridge run inside the host: the test process lives outside the namespace. */
const BRIDGE = `
const s = require('node:net').connect(Number(process.argv[1]), '127.0.0.1');
s.on('connect', () => process.stderr.write('bridge connected\\n'));
s.on('error', (e) => { process.stderr.write('bridge error ' + e.message + '\\n'); process.exit(1); });
s.on('close', () => process.exit(0));
process.stdin.pipe(s);
s.pipe(process.stdout);
`;

export async function startBaresip(bed: NetBed, host: Host, spec: BaresipSpec): Promise<Baresip> {
  const sipPort = spec.sipPort ?? 5060;
  const ctrlPort = spec.ctrlPort ?? 4444;
  const regint = spec.regint ?? 3600;
  const dir = bed.subdir(`baresip-${host.name}-${spec.user}`);
  writeFileSync(join(dir, 'config'), config(host.ip, sipPort, ctrlPort, spec.caFile));
  const aor = `sip:${spec.user}@${spec.registrar}`;
  // The transport rides on the AOR URI: REGISTER, INVITE and the Contact all use it.
  writeFileSync(
    join(dir, 'accounts'),
    `<${aor};transport=${spec.transport}>;regint=${regint};answermode=${spec.answer ?? 'manual'};audio_codecs=pcmu\n`,
  );
  writeFileSync(join(dir, 'contacts'), '');
  const child = host.spawn('baresip', ['-f', dir]);
  const out = watchOutput(child);
  await out.waitFor(/baresip is ready/, 10000);

  const bridge = host.spawn(process.execPath, ['-e', BRIDGE, String(ctrlPort)], { stdio: ['pipe', 'pipe', 'pipe'] });
  await watchOutput(bridge).waitFor(/bridge connected/, 5000);
  const events: BaresipEvent[] = [];
  const pending = new Map<string, { resolve: (data: string) => void; reject: (err: Error) => void }>();
  const eventWaiters = new Set<() => void>();
  let tokens = 0;
  bridge.stdout?.on(
    'data',
    netstrings((json) => {
      const msg = JSON.parse(json) as Record<string, unknown>;
      if (msg.event === true) {
        events.push({ ...(msg as Omit<BaresipEvent, 'at'>), at: Date.now() });
        for (const w of eventWaiters) w();
      } else if (msg.response === true && typeof msg.token === 'string') {
        const p = pending.get(msg.token);
        pending.delete(msg.token);
        if (msg.ok === true) p?.resolve(String(msg.data ?? ''));
        else p?.reject(new Error(`baresip: command failed: ${String(msg.data ?? '')}`));
      }
    }),
  );

  const command = (name: string, params?: string) =>
    new Promise<string>((resolve, reject) => {
      const token = String(++tokens);
      const timer = setTimeout(() => {
        pending.delete(token);
        reject(new Error(`baresip: no answer to "${name}" within 5 s`));
      }, 5000);
      pending.set(token, {
        resolve: (d) => {
          clearTimeout(timer);
          resolve(d);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      const body = Buffer.from(JSON.stringify({ command: name, ...(params !== undefined ? { params } : {}), token }));
      bridge.stdin?.write(Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(',')]));
    });

  const waitEvent = (type: string, ms: number, from = 0) =>
    new Promise<BaresipEvent>((resolve, reject) => {
      const check = () => {
        const e = events.slice(from).find((x) => x.type === type);
        if (!e) return false;
        eventWaiters.delete(check);
        clearTimeout(timer);
        resolve(e);
        return true;
      };
      const timer = setTimeout(() => {
        eventWaiters.delete(check);
        const seen = events.map((e) => `${e.type}${e.param ? ` (${e.param})` : ''}`).join(', ');
        reject(new Error(`baresip ${aor}: no ${type} within ${ms} ms; events: ${seen || 'none'}`));
      }, ms);
      if (!check()) eventWaiters.add(check);
    });

  const reginfo = async () => stripAnsi(await command('reginfo'));
  const phone: Baresip = {
    child,
    aor,
    output: out.text,
    events,
    waitEvent,
    command,
    dial: (uri) => command('dial', uri),
    hangup: () => command('hangup'),
    reginfo,
    waitRegistered: async (ms) => {
      let info = '';
      await until(
        async () => {
          info = await reginfo();
          return /\bOK\b/.test(info);
        },
        ms,
        `${aor} registered`,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; reginfo: ${info}; output:\n${out.text().slice(-2000)}`);
      });
    },
    stop: async () => {
      await bed.stop(bridge);
      await bed.stop(child);
    },
  };
  // Registration starts before the control link is up (its event may be gone): ask instead.
  if (regint > 0) await phone.waitRegistered(10000);
  return phone;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: baresip colours its tables with ANSI escapes
const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

function config(ip: string, sipPort: number, ctrlPort: number, caFile?: string): string {
  return [
    'poll_method epoll',
    `sip_listen ${ip}:${sipPort}`,
    ...(caFile ? [`sip_cafile ${caFile}`] : []),
    'call_local_timeout 120',
    'call_max_calls 4',
    // No audio device: a sine source (48 kHz stereo, what ausine produces) and a null player.
    'audio_source ausine,440',
    'audio_player aubridge,nil',
    'audio_alert aubridge,nil',
    'ausrc_srate 48000',
    'ausrc_channels 2',
    'auplay_srate 48000',
    'auplay_channels 2',
    'rtp_ports 10000-10100',
    'module_path /usr/lib/baresip/modules',
    'module g711.so',
    'module ausine.so',
    'module aubridge.so',
    'module_tmp account.so',
    'module_app menu.so',
    'module_app ctrl_tcp.so',
    `ctrl_tcp_listen 127.0.0.1:${ctrlPort}`,
    '',
  ].join('\n');
}

/** Splits a byte stream into netstrings ("<len>:<payload>,") and hands each payload on. */
function netstrings(onMessage: (payload: string) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    for (;;) {
      const colon = buf.indexOf(0x3a);
      if (colon < 0) return;
      const len = Number(buf.subarray(0, colon).toString('latin1'));
      if (!Number.isInteger(len)) throw new Error(`baresip: bad netstring head ${buf.subarray(0, colon).toString()}`);
      const end = colon + 1 + len;
      if (buf.length < end + 1) return;
      onMessage(buf.subarray(colon + 1, end).toString('utf8'));
      buf = buf.subarray(end + 1);
    }
  };
}
