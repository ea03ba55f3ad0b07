/**
 * The callers of the stream-failover bench: `users` TCP or TLS user agents
 * (test/lib/stream-ua.ts), each on its own connection with its own
 * +sip.instance, in one process in the client's bed host. All register; the
 * first `callers` call the far end. When a connection dies each connects
 * again after a random delay in [reconnectMinMs, reconnectMaxMs] and
 * re-registers, as an RFC 5626 phone does. Counts are its own.
 *
 * argv: JSON Spec. stdin: "report" lines; stdout: JSON lines ({ event: "ready", ... }, reports).
 */
import readline from 'node:readline';
import { StreamUa } from '../../test/lib/stream-ua.ts';

interface Spec {
  transport: 'tcp' | 'tls';
  proxy: string;
  port: number;
  domain: string;
  caFile?: string;
  prefix: string;
  users: number;
  callers: number;
  callee: string;
  reconnectMinMs: number;
  reconnectMaxMs: number;
}

const spec = JSON.parse(process.argv[2] as string) as Spec;
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const counts = {
  registered: 0,
  callsEstablished: 0,
  callsFailed: 0,
  closed: 0,
  reconnected: 0,
  reRegistered: 0,
  reconnectFailed: 0,
  byeInDialog: 0,
  byeUnknown: 0,
  /** ms from a connection's death to its re-registration answered, per reconnect. */
  reRegisterMs: [] as number[],
};

const ended = new Set<string>();
const uas = Array.from(
  { length: spec.users },
  (_, i) =>
    new StreamUa({
      transport: spec.transport,
      proxy: spec.proxy,
      port: spec.port,
      user: `${spec.prefix}${i}`,
      domain: spec.domain,
      ...(spec.caFile ? { caFile: spec.caFile } : {}),
    }),
);

async function reconnect(ua: StreamUa): Promise<void> {
  const died = Date.now();
  const delay = spec.reconnectMinMs + Math.random() * (spec.reconnectMaxMs - spec.reconnectMinMs);
  await new Promise((r) => setTimeout(r, delay));
  for (let attempt = 0; attempt < 10; attempt++) {
    try {
      await ua.connect(2000);
      counts.reconnected++;
      if ((await ua.register()) === 200) {
        counts.reRegistered++;
        counts.reRegisterMs.push(Date.now() - died);
      }
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  counts.reconnectFailed++;
}

/** Runs `f` over items, `width` at a time. */
async function pool<T>(items: T[], width: number, f: (x: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        await f(items[i] as T, i);
      }
    }),
  );
}

for (const ua of uas) {
  ua.onClosed = () => {
    counts.closed++;
    void reconnect(ua);
  };
  ua.onRequest = (method, callId, inDialog) => {
    if (method !== 'BYE') return;
    // Distinct dialogs: a retransmitted BYE is one call ended, not two.
    if (inDialog) ended.add(callId);
    else counts.byeUnknown++;
    counts.byeInDialog = ended.size;
  };
}

await pool(uas, 20, async (ua) => {
  await ua.connect();
  if ((await ua.register()) === 200) counts.registered++;
});
await pool(uas.slice(0, spec.callers), 10, async (ua) => {
  const r = await ua.invite(spec.callee).catch(() => ({ status: 0 }));
  if (r.status === 200) counts.callsEstablished++;
  else counts.callsFailed++;
});
out({ event: 'ready', ...counts });

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'report') out({ event: 'report', ...counts });
});
