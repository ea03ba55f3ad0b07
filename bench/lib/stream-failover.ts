/**
 * Host crash of the master with TCP or TLS clients (issue 11: keys
 * tls_host_down_*, *_dialogs_stuck). One trial on a fresh bed:
 *   - a pair with TLS (one certificate, both sidecars);
 *   - a far end over UDP (far-end-main.ts) that answers calls;
 *   - `users` TCP/TLS user agents in the client host (stream-callers-main.ts),
 *     each on its own connection, all registered; the first `calls` call the far end;
 *   - a TLS prober (new connection + OPTIONS every 10 ms) for the gap;
 *   - the master's host crashes (link down, its Kamailio and sidecar killed);
 *   - each client whose connection died reconnects 1-4 s later and re-registers;
 *   - the far end then hangs up every call: a BYE along each dialog's route set.
 * Figures, all from the tools' own counters:
 *   gap           fault -> first TLS OPTIONS on a new connection answered;
 *   regs lost     of the users, those the new master's location table lacks right after the takeover;
 *   calls failed  calls not set up, plus established calls whose BYE the far end did not get 200 for;
 *   dialogs stuck established calls whose caller never got the far end's BYE in its dialog.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { lookupAll } from '../../test/lib/kamailio.ts';
import { type Host, NetBed } from '../../test/lib/netbed.ts';
import { PAIR_BED_HOSTS, role, startPair, VIP } from '../../test/lib/pair.ts';
import { gapMs } from '../../test/lib/prober.ts';
import { sleep, until } from '../../test/lib/procs.ts';
import { makeTestCa } from '../../test/lib/tls-certs.ts';
import { startTlsProber } from '../../test/lib/tls-prober.ts';

const CALLERS = fileURLToPath(new URL('./stream-callers-main.ts', import.meta.url));
const FAR_END = fileURLToPath(new URL('./far-end-main.ts', import.meta.url));

export interface StreamTrial {
  gapMs: number | null;
  regsLost: number;
  callsFailed: number;
  dialogsStuck: number;
  established: number;
  /** Clients that re-registered within 5 s of losing their connection, of those that lost it. */
  reconnectedIn5s: number;
  /** Clients that lost their connection and never re-registered. */
  neverBack: number;
  lostConnections: number;
  reRegisterMsP50: number | null;
}

type Json = Record<string, unknown>;

/** A child that speaks JSON lines: every line it printed, and a wait for one. */
function jsonLines(child: ChildProcess) {
  const lines: Json[] = [];
  let tail = '';
  let err = '';
  child.stdout?.on('data', (b: Buffer) => {
    tail += b.toString();
    const parts = tail.split('\n');
    tail = parts.pop() ?? '';
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p) as Json);
  });
  child.stderr?.on('data', (b: Buffer) => {
    err = (err + b.toString()).slice(-4000);
  });
  const wait = async (event: string, ms: number, from = 0): Promise<Json> => {
    let hit: Json | undefined;
    await until(
      () => {
        if (child.exitCode !== null) throw new Error(`${event}: the tool exited ${child.exitCode}: ${err}`);
        hit = lines.slice(from).find((l) => l.event === event);
        return hit !== undefined;
      },
      ms,
      `${event} from a bench tool`,
    );
    return hit as Json;
  };
  return { lines, wait, send: (s: string) => child.stdin?.write(`${s}\n`) };
}

export async function streamTrial(transport: 'tcp' | 'tls', users = 200, calls = 100): Promise<StreamTrial> {
  const bed = NetBed.create(PAIR_BED_HOSTS);
  try {
    const [ha, hb, client, uas] = ['a', 'b', 'client', 'uas'].map((n) => bed.host(n)) as [Host, Host, Host, Host];
    const ca = makeTestCa(bed.subdir('certs'));
    const server = ca.issue('server', [VIP]);
    const [a, b] = await startPair(bed, ha, hb, { SIPHA_TLS_DIR: server.dir, SIPHA_LOG_LEVEL: 'warn' });
    const farChild = uas.spawn(
      process.execPath,
      [FAR_END, JSON.stringify({ ip: uas.ip, port: 5060, proxy: VIP, domain: VIP, user: 'far' })],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const far = jsonLines(farChild);
    const ready = await far.wait('ready', 10000);
    if (ready.registered !== 200) throw new Error(`the far end did not register: ${ready.registered}`);
    const callerChild = client.spawn(
      process.execPath,
      [
        CALLERS,
        JSON.stringify({
          transport,
          proxy: VIP,
          port: transport === 'tls' ? 5061 : 5060,
          domain: VIP,
          caFile: ca.certFile,
          prefix: `${transport}u`,
          users,
          callers: calls,
          callee: 'far',
          reconnectMinMs: 1000,
          reconnectMaxMs: 4000,
        }),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const callers = jsonLines(callerChild);
    const set = await callers.wait('ready', 60000);
    if (set.registered !== users) throw new Error(`only ${set.registered} of ${users} ${transport} users registered`);
    const established = Number(set.callsEstablished);
    await sleep(1000);
    const prober = startTlsProber(bed, client, VIP, ca.certFile, 10, 6000);
    await sleep(1000);
    // The instant the link is down (probes sent before can still be answered by the old master).
    ha.run('ip', ['link', 'set', 'eth0', 'down']);
    const faultNs = process.hrtime.bigint();
    await Promise.all([bed.stop(a.kamailio.child, 'SIGKILL'), bed.stop(a.sidecar.child, 'SIGKILL')]);
    await until(() => role(b) === 'master', 5000, 'b takes over');
    // Before any client is back (the first reconnects 1 s after its connection died).
    const names = Array.from({ length: users }, (_, i) => `${transport}u${i}`);
    const regsLost = users - lookupAll(b.kamailio, names).size;
    const gap = gapMs(await prober.done, faultNs);
    // Every client that lost its connection is back (or gave up).
    let report: Json = {};
    await until(
      async () => {
        const from = callers.lines.length;
        callers.send('report');
        report = await callers.wait('report', 2000, from);
        return Number(report.closed) > 0 && Number(report.reRegistered) + Number(report.reconnectFailed) >= Number(report.closed);
      },
      20000,
      'the clients reconnected and re-registered',
    ).catch(() => {}); // some never came back: counted below (their dialogs stay stuck)
    const byeFrom = far.lines.length;
    far.send('bye');
    const byes = await far.wait('byes-done', 40000, byeFrom);
    await sleep(500);
    const from = callers.lines.length;
    callers.send('report');
    report = await callers.wait('report', 2000, from);
    const reMs = (report.reRegisterMs as number[]).slice().sort((x, y) => x - y);
    return {
      gapMs: gap === null ? null : Math.round(gap * 10) / 10,
      regsLost,
      callsFailed: calls - established + (established - Number(byes.byeOk)),
      dialogsStuck: established - Number(report.byeInDialog),
      established,
      reconnectedIn5s: reMs.filter((ms) => ms <= 5000).length,
      neverBack: Number(report.closed) - Number(report.reRegistered),
      lostConnections: Number(report.closed),
      reRegisterMsP50: reMs.length ? (reMs[Math.floor(reMs.length / 2)] as number) : null,
    };
  } finally {
    await bed.destroy();
  }
}
