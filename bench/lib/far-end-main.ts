/**
 * The far end of the stream-failover bench, over UDP in its own bed host: it
 * registers as `user`, answers every INVITE 200 (echoing Record-Route), and
 * on "bye" sends a BYE in every dialog it holds along its route set
 * (RFC 3261 12.2.1.1), retransmitted on Timer E's schedule (500 ms doubling
 * to 4 s) for up to 32 s (Timer F). It counts from its own view: dialogs
 * answered, BYEs answered 200, BYEs that got another answer or none.
 *
 * argv: JSON { ip, port, proxy, domain, user }. stdin: "bye" | "report"
 * lines; stdout: one JSON line per report, and { event: "ready" }.
 */
import dgram from 'node:dgram';
import readline from 'node:readline';
import {
  all,
  branchOf,
  format,
  header,
  type Message,
  method,
  parse,
  rand,
  reply,
  sdp,
  status,
  uriIn,
} from '../../test/lib/sip-lite.ts';

const spec = JSON.parse(process.argv[2] as string) as { ip: string; port: number; proxy: string; domain: string; user: string };
const sock = dgram.createSocket('udp4');
const dialogs = new Map<string, { routes: string[]; target: string; from: string; to: string; cseq: number }>();
const pending = new Map<string, (m: Message) => void>();
const counts = { invites: 0, answered: 0, byeSent: 0, byeOk: 0, byeOther: 0, byeNoAnswer: 0, registered: 0 };
const via = (b: string) => `Via: SIP/2.0/UDP ${spec.ip}:${spec.port};branch=${b};rport`;
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

function sendTo(text: string, hostPort: string): void {
  const [host, port] = hostPort.split(':');
  sock.send(text, Number(port ?? 5060), host);
}

/** Where a request goes: the first Route's host:port, else the target's (all UDP here). */
function hop(routes: string[], target: string): string {
  const uri = uriIn(routes[0] ?? `<${target}>`).replace(/^sips?:/, '');
  const hostport = (uri.split(';')[0] as string).split('@').pop() as string;
  return hostport.includes(':') ? hostport : `${hostport}:5060`;
}

/** Sends a request and retransmits it until a final answer (Timer E/F, shortened to 32 s). */
function request(text: (b: string) => string, to: string): Promise<number> {
  const b = `z9hG4bK-${rand()}`;
  const body = text(b);
  return new Promise((resolve) => {
    let wait = 500;
    let timer: NodeJS.Timeout;
    const started = Date.now();
    const again = () => {
      if (Date.now() - started > 32_000) {
        pending.delete(b);
        resolve(0);
        return;
      }
      sendTo(body, to);
      timer = setTimeout(again, wait);
      wait = Math.min(wait * 2, 4000);
    };
    pending.set(b, (m) => {
      clearTimeout(timer);
      pending.delete(b);
      resolve(status(m));
    });
    again();
  });
}

sock.on('message', (bytes, rinfo) => {
  const m = parse(bytes.toString('latin1'));
  if (m === null) return;
  const code = status(m);
  if (code > 0) {
    if (code >= 200) pending.get(branchOf(m))?.(m);
    return;
  }
  const from = `${rinfo.address}:${rinfo.port}`;
  const what = method(m);
  const callId = header(m, 'Call-ID') ?? '';
  if (what === 'INVITE') {
    counts.invites++;
    const tag = rand();
    const rr = all(m, 'Record-Route');
    if (!dialogs.has(callId)) {
      dialogs.set(callId, {
        routes: rr,
        target: uriIn(header(m, 'Contact') ?? ''),
        from: `${header(m, 'To')};tag=${tag}`,
        to: header(m, 'From') ?? '',
        cseq: 1,
      });
      counts.answered++;
    }
    const d = dialogs.get(callId);
    const toTag = /;tag=([^;]+)/.exec(d?.from ?? '')?.[1];
    sendTo(
      reply(
        m,
        '200 OK',
        [
          ...rr.map((r) => `Record-Route: ${r}`),
          `Contact: <sip:${spec.user}@${spec.ip}:${spec.port}>`,
          'Content-Type: application/sdp',
        ],
        toTag,
        sdp(spec.ip),
      ),
      from,
    );
    return;
  }
  if (what === 'ACK') return;
  if (what === 'BYE') dialogs.delete(callId);
  sendTo(reply(m, '200 OK'), from);
});

async function byeAll(): Promise<void> {
  const list = [...dialogs.entries()];
  dialogs.clear();
  await Promise.all(
    list.map(async ([callId, d], i) => {
      await new Promise((r) => setTimeout(r, i * 5)); // 200 BYEs a second, not one burst
      counts.byeSent++;
      const code = await request(
        (b) =>
          format([
            `BYE ${d.target} SIP/2.0`,
            via(b),
            'Max-Forwards: 70',
            ...d.routes.map((r) => `Route: ${r}`),
            `From: ${d.from}`,
            `To: ${d.to}`,
            `Call-ID: ${callId}`,
            `CSeq: ${++d.cseq} BYE`,
          ]),
        hop(d.routes, d.target),
      );
      if (code === 200) counts.byeOk++;
      else if (code === 0) counts.byeNoAnswer++;
      else counts.byeOther++;
    }),
  );
}

sock.bind(spec.port, spec.ip, async () => {
  const code = await request(
    (b) =>
      format([
        `REGISTER sip:${spec.domain} SIP/2.0`,
        via(b),
        'Max-Forwards: 70',
        `From: <sip:${spec.user}@${spec.domain}>;tag=${rand()}`,
        `To: <sip:${spec.user}@${spec.domain}>`,
        `Call-ID: far-${rand()}`,
        'CSeq: 1 REGISTER',
        `Contact: <sip:${spec.user}@${spec.ip}:${spec.port}>`,
        'Expires: 600',
      ]),
    `${spec.proxy}:5060`,
  );
  counts.registered = code === 200 ? 1 : 0;
  out({ event: 'ready', registered: code });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'bye') void byeAll().then(() => out({ event: 'byes-done', ...counts }));
  else if (line.trim() === 'report') out({ event: 'report', ...counts, dialogs: dialogs.size });
});
