/**
 * One scripted TCP/TLS user agent (stream-ua.ts) as its own process inside a
 * bed host, driven by sip-ua.ts.
 *
 * argv: JSON StreamUaSpec. stdin: one JSON command per line { id, cmd, ... };
 * stdout: one JSON line per answer { id, ok, ... } or event { event, ... }.
 */
import readline from 'node:readline';
import { StreamUa, type StreamUaSpec } from './stream-ua.ts';

const ua = new StreamUa(JSON.parse(process.argv[2] as string) as StreamUaSpec);
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
ua.onRequest = (method, callId, dialog) => out({ event: 'request', method, callId, dialog });
ua.onClosed = () => out({ event: 'closed' });
ua.onLeak = (start) => out({ event: 'leak', message: start });

async function run(c: { id: number; cmd: string; [k: string]: unknown }): Promise<object> {
  switch (c.cmd) {
    case 'connect':
      await ua.connect(5000, c.localPort === undefined ? undefined : Number(c.localPort));
      return { local: ua.local };
    case 'register':
      return { status: await ua.register(Number(c.expires ?? 600)) };
    case 'invite':
      return await ua.invite(String(c.to));
    case 'bye':
      return { status: await ua.bye(String(c.callId)) };
    case 'close':
      ua.close();
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
