/** Drives sip-ua-main.ts (a scripted TCP/TLS user agent) in a bed host. */
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Host } from './netbed.ts';
import { until, watchOutput } from './procs.ts';
import type { StreamUaSpec } from './stream-ua.ts';

const MAIN = fileURLToPath(new URL('./sip-ua-main.ts', import.meta.url));

/** What the user agent is: transport, proxy, user, CA (stream-ua.ts). */
export type UaSpec = Omit<StreamUaSpec, 'instance'>;

export interface UaEvent {
  event: string;
  method?: string;
  callId?: string;
  dialog?: boolean;
  local?: string;
  message?: string;
}

export interface SipUa {
  readonly events: UaEvent[];
  /** `localPort`: from this port (another client's old one, say). */
  connect(localPort?: number): Promise<{ local: string }>;
  register(expires?: number): Promise<number>;
  invite(to: string): Promise<{ status: number; callId: string }>;
  bye(callId: string): Promise<number>;
  close(): Promise<void>;
  /** Resolves when an event matching `pred` has been seen after index `from`. */
  waitEvent(pred: (e: UaEvent) => boolean, ms: number, from?: number, what?: string): Promise<UaEvent>;
}

export async function startUa(host: Host, spec: UaSpec): Promise<SipUa> {
  const child = host.spawn(process.execPath, [MAIN, JSON.stringify({ ...spec, instance: `urn:uuid:${randomUUID()}` })], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const err = watchOutput(child);
  const events: UaEvent[] = [];
  const answers = new Map<number, (a: Record<string, unknown>) => void>();
  let tail = '';
  child.stdout?.on('data', (b: Buffer) => {
    tail += b.toString();
    const lines = tail.split('\n');
    tail = lines.pop() ?? '';
    for (const l of lines) {
      if (l.trim() === '') continue;
      const o = JSON.parse(l) as Record<string, unknown>;
      if (typeof o.id === 'number') answers.get(o.id)?.(o);
      else events.push(o as unknown as UaEvent);
    }
  });
  await until(
    () => {
      if (child.exitCode !== null) throw new Error(`sip-ua exited ${child.exitCode}: ${err.text()}`);
      return events.some((e) => e.event === 'ready');
    },
    10000,
    'sip-ua ready',
  );
  let ids = 0;
  const call = (cmd: string, args: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = ++ids;
      answers.set(id, (a) => {
        answers.delete(id);
        if (a.ok === true) resolve(a);
        else reject(new Error(`sip-ua ${cmd}: ${String(a.error)}`));
      });
      child.stdin?.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  const waitEvent = async (pred: (e: UaEvent) => boolean, ms: number, from = 0, what = 'a user agent event') => {
    let found: UaEvent | undefined;
    await until(
      () => {
        found = events.slice(from).find(pred);
        return found !== undefined;
      },
      ms,
      what,
    );
    return found as UaEvent;
  };
  return {
    events,
    connect: async (localPort) => ({
      local: String((await call('connect', localPort === undefined ? {} : { localPort })).local),
    }),
    register: async (expires = 600) => Number((await call('register', { expires })).status),
    invite: async (to) => {
      const a = await call('invite', { to });
      return { status: Number(a.status), callId: String(a.callId) };
    },
    bye: async (callId) => Number((await call('bye', { callId })).status),
    close: async () => {
      await call('close');
    },
    waitEvent,
  };
}
