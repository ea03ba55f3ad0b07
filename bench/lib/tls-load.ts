/**
 * A TLS load process for SIP (bench/tls.ts runs one or more in a client
 * netns, so it never shares an event loop with what it measures):
 *
 *   node tls-load.ts '<LoadSpec as JSON>'
 *
 * - handshake: new TLS connections at `rate`/s, each a fresh session (no
 *   session or ticket is ever passed back: no resumption), one OPTIONS sent
 *   after the handshake; counted ok when its 200 arrives, then closed.
 * - register: `pool` persistent TLS connections opened first, one AOR each;
 *   REGISTERs (refreshes of that AOR) at `rate`/s round-robin over them;
 *   counted ok when their 200 arrives.
 *
 * Open loop: a request that is due while `maxInFlight` are outstanding is
 * skipped and counted, so a slow server shows as a shortfall, not as a
 * slower clock. Bounded: at most rate x seconds attempts, then at most
 * timeoutMs for stragglers. Prints one LoadResult as JSON on stdout.
 */
import { readFileSync } from 'node:fs';
import { connect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';

export interface LoadSpec {
  mode: 'handshake' | 'register';
  host: string;
  port: number;
  caFile: string;
  rate: number;
  seconds: number;
  /** register: persistent connections. */
  pool?: number;
  maxInFlight: number;
  timeoutMs: number;
  /** Keeps AORs and Call-IDs apart between processes and rungs. */
  tag: string;
}

export interface LoadResult {
  planned: number;
  attempted: number;
  ok: number;
  failed: number;
  timedOut: number;
  skipped: number;
  /** From the first attempt to the last ok answer, seconds (the tool's own clock). */
  elapsedS: number;
  /** Connection set-up of the register pool, ms (register mode). */
  poolSetupMs: number;
  /** Request (or connect, for handshakes) to its 200, µs, every ok one. */
  latenciesUs: number[];
  protocols: Record<string, number>;
  ciphers: Record<string, number>;
  groups: Record<string, number>;
  errors: Record<string, number>;
  /** How busy the whole machine was (all cores, /proc/stat) from the first request to the end of the drain, %. */
  machineBusyPct: number;
  /** Handshakes that resumed a session: 0 is the point. */
  resumed: number;
  cpuUserMs: number;
  cpuSystemMs: number;
}

const CRLF = '\r\n';

/** The machine's CPU jiffies (all cores, /proc/stat is not per netns): busy and total. */
function machineTimes(): { busy: number; total: number } {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - (f[3] ?? 0) - (f[4] ?? 0), total }; // minus idle and iowait
}

function busySince(m0: { busy: number; total: number }): number {
  const m1 = machineTimes();
  return (100 * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total);
}
const now = () => performance.now();
const bump = (m: Record<string, number>, k: string) => {
  m[k] = (m[k] ?? 0) + 1;
};

/** Reads SIP responses out of a TLS byte stream: status code and CSeq number of each. */
class ResponseReader {
  private buf = '';
  push(chunk: Buffer, onResponse: (code: number, cseq: number) => void): void {
    this.buf += chunk.toString('latin1');
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.slice(0, end);
      const len = Number(/\r\n(?:content-length|l)\s*:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (this.buf.length < end + 4 + len) return;
      this.buf = this.buf.slice(end + 4 + len);
      const code = Number(/^SIP\/2\.0 (\d{3})/.exec(head)?.[1] ?? 0);
      const cseq = Number(/\r\ncseq\s*:\s*(\d+)/i.exec(head)?.[1] ?? -1);
      onResponse(code, cseq);
    }
  }
}

function request(
  method: 'OPTIONS' | 'REGISTER',
  spec: LoadSpec,
  s: TLSSocket,
  callId: string,
  cseq: number,
  user: string,
): string {
  const local = `${s.localAddress}:${s.localPort}`;
  const lines = [
    method === 'REGISTER'
      ? `REGISTER sip:${spec.host}:${spec.port};transport=tls SIP/2.0`
      : `OPTIONS sip:${spec.host}:${spec.port};transport=tls SIP/2.0`,
    `Via: SIP/2.0/TLS ${local};branch=z9hG4bK-${callId}-${cseq};rport`,
    'Max-Forwards: 70',
    `From: <sip:${user}@${spec.host}>;tag=${callId}`,
    method === 'REGISTER' ? `To: <sip:${user}@${spec.host}>` : `To: <sip:${spec.host}:${spec.port}>`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
  ];
  if (method === 'REGISTER') lines.push(`Contact: <sip:${user}@${local};transport=tls>`, 'Expires: 3600');
  lines.push('User-Agent: sipha-tls-load', 'Content-Length: 0', '', '');
  return lines.join(CRLF);
}

function newResult(planned: number): LoadResult {
  return {
    planned,
    attempted: 0,
    ok: 0,
    failed: 0,
    timedOut: 0,
    skipped: 0,
    elapsedS: 0,
    poolSetupMs: 0,
    latenciesUs: [],
    protocols: {},
    ciphers: {},
    groups: {},
    errors: {},
    resumed: 0,
    machineBusyPct: 0,
    cpuUserMs: 0,
    cpuSystemMs: 0,
  };
}

function tlsConnect(spec: LoadSpec, ctx: SecureContext): TLSSocket {
  // An IP host: Node sends no SNI and checks the IP against the certificate's SANs.
  // No `session` option: every connection is a full handshake.
  // noDelay as SIP stacks set it: with Nagle the request written right after the
  // client's Finished waits for the server's (delayed) ACK, up to 40 ms.
  const s = connect({ host: spec.host, port: spec.port, secureContext: ctx });
  s.setNoDelay(true);
  return s;
}

function noteSession(r: LoadResult, s: TLSSocket): void {
  bump(r.protocols, s.getProtocol() ?? 'unknown');
  if (s.isSessionReused()) r.resumed++;
  bump(r.ciphers, s.getCipher().name);
  const key = s.getEphemeralKeyInfo(); // {} when the key exchange was not ephemeral
  bump(r.groups, key && 'name' in key && key.name ? key.name : 'unknown');
}

/**
 * Calls `fire` rate x seconds times, paced on the clock; resolves when all
 * were fired. Catch-up after a stall is capped so a late loop does not burst.
 */
function pace(spec: LoadSpec, fire: (i: number) => void): Promise<void> {
  const total = Math.round(spec.rate * spec.seconds);
  const t0 = now();
  let fired = 0;
  return new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((now() - t0) / 1000) * spec.rate) + 1);
      const burst = Math.min(due - fired, Math.max(10, spec.rate / 50));
      for (let k = 0; k < burst; k++) fire(fired++);
      if (fired >= total || now() - t0 > spec.seconds * 1000 + spec.timeoutMs) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
}

/** Waits until nothing is in flight, at most `ms`. */
async function drain(inFlight: () => number, ms: number): Promise<void> {
  const end = now() + ms;
  while (inFlight() > 0 && now() < end) await new Promise((r) => setTimeout(r, 5));
}

async function handshakes(spec: LoadSpec, ctx: SecureContext): Promise<LoadResult> {
  const r = newResult(Math.round(spec.rate * spec.seconds));
  const live = new Set<TLSSocket>();
  let t0 = 0;
  let lastOk = 0;
  const m0 = machineTimes();
  await pace(spec, (i) => {
    if (i === 0) t0 = now();
    if (live.size >= spec.maxInFlight) {
      r.skipped++;
      return;
    }
    r.attempted++;
    const start = now();
    const s = tlsConnect(spec, ctx);
    live.add(s);
    let done = false;
    const finish = (ok: boolean, why?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      live.delete(s);
      if (ok) {
        r.ok++;
        lastOk = now();
        r.latenciesUs.push(Math.round((lastOk - start) * 1000));
        s.end(); // close_notify and FIN: the server sees an orderly close
        setTimeout(() => s.destroy(), 1000).unref();
      } else {
        if (why === 'timeout') r.timedOut++;
        else {
          r.failed++;
          bump(r.errors, why ?? 'unknown');
        }
        s.destroy();
      }
    };
    const timer = setTimeout(() => finish(false, 'timeout'), spec.timeoutMs);
    const reader = new ResponseReader();
    s.once('secureConnect', () => {
      noteSession(r, s);
      s.write(request('OPTIONS', spec, s, `${spec.tag}-${i}`, 1, 'tlsbench'));
    });
    s.on('data', (d: Buffer) => reader.push(d, (code) => finish(code === 200, `status ${code}`)));
    s.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
    s.on('close', () => finish(false, 'closed before answer'));
  });
  await drain(() => live.size, spec.timeoutMs);
  r.machineBusyPct = busySince(m0);
  r.elapsedS = ((lastOk || now()) - t0) / 1000;
  return r;
}

interface PoolConn {
  s: TLSSocket;
  user: string;
  callId: string;
  cseq: number;
  /** CSeq -> send time. */
  pending: Map<number, number>;
}

async function registers(spec: LoadSpec, ctx: SecureContext): Promise<LoadResult> {
  const r = newResult(Math.round(spec.rate * spec.seconds));
  const poolSize = spec.pool ?? 100;
  const setupStart = now();
  let inFlight = 0;
  let lastOk = 0;
  const onResponse = (c: PoolConn, code: number, cseq: number) => {
    const sent = c.pending.get(cseq);
    if (sent === undefined || code < 200) return; // provisional, or already timed out
    c.pending.delete(cseq);
    inFlight--;
    if (code === 200) {
      r.ok++;
      lastOk = now();
      r.latenciesUs.push(Math.round((lastOk - sent) * 1000));
    } else {
      r.failed++;
      bump(r.errors, `status ${code}`);
    }
  };
  const open = (n: number) =>
    new Promise<PoolConn>((resolve, reject) => {
      const s = tlsConnect(spec, ctx);
      const c: PoolConn = { s, user: `tls-${spec.tag}-${n}`, callId: `${spec.tag}-${n}`, cseq: 0, pending: new Map() };
      let up = false;
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('no handshake in time'));
      }, spec.timeoutMs);
      s.once('secureConnect', () => {
        up = true;
        clearTimeout(timer);
        noteSession(r, s);
        resolve(c);
      });
      // Kept for the socket's whole life: an error after set-up is counted, not thrown.
      s.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (up) bump(r.errors, `pool connection error ${err.code ?? err.message}`);
        else reject(err);
      });
      const reader = new ResponseReader();
      s.on('data', (d: Buffer) => reader.push(d, (code, cseq) => onResponse(c, code, cseq)));
      s.on('close', () => {
        // Whatever was outstanding on a closed connection will not be answered.
        for (const _ of c.pending.keys()) {
          r.failed++;
          bump(r.errors, 'connection closed');
          inFlight--;
        }
        c.pending.clear();
      });
    });
  // Set-up is not measured, but a refused connection is worth knowing: each
  // retry is counted in errors; a third failure ends the run.
  const openWithRetry = async (n: number): Promise<PoolConn> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await open(n);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        if (attempt >= 3) throw new Error(`pool connection ${n}: ${code} (3 attempts)`);
        bump(r.errors, `pool set-up retried: ${code}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  };
  const conns = await Promise.all(Array.from({ length: poolSize }, (_, n) => openWithRetry(n)));
  r.poolSetupMs = Math.round(now() - setupStart);
  const t0 = now();
  // Requests not answered within timeoutMs are given up (checked every 100 ms).
  const sweeper = setInterval(() => {
    const limit = now() - spec.timeoutMs;
    for (const c of conns)
      for (const [cseq, sent] of c.pending)
        if (sent < limit) {
          c.pending.delete(cseq);
          inFlight--;
          r.timedOut++;
        }
  }, 100);
  const m0 = machineTimes();
  await pace(spec, (i) => {
    const c = conns[i % conns.length] as PoolConn;
    if (inFlight >= spec.maxInFlight || c.s.destroyed) {
      r.skipped++;
      return;
    }
    r.attempted++;
    inFlight++;
    c.cseq++;
    c.pending.set(c.cseq, now());
    c.s.write(request('REGISTER', spec, c.s, c.callId, c.cseq, c.user));
  });
  await drain(() => inFlight, spec.timeoutMs + 200);
  r.machineBusyPct = busySince(m0);
  clearInterval(sweeper);
  r.elapsedS = ((lastOk || now()) - t0) / 1000;
  for (const c of conns) c.s.end();
  return r;
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec;
  // One context for every connection: tls.connect({ ca }) would parse the CA and
  // build a new store per connection, costing the load more than the server.
  // A shared context does not resume sessions (a client resumes only when given
  // `session`); resumed connections are counted, to show it.
  // Groups: the ones Kamailio's OpenSSL 3.0 offers. Node 24 would offer X25519MLKEM768
  // first, which the sidecar (Node 24) takes and Kamailio cannot: the same key
  // exchange for both keeps the comparison about terminating TLS.
  const ctx = createSecureContext({ ca: readFileSync(spec.caFile), minVersion: 'TLSv1.2', ecdhCurve: 'X25519:P-256' });
  const cpu0 = process.cpuUsage();
  let r: LoadResult;
  try {
    r = spec.mode === 'handshake' ? await handshakes(spec, ctx) : await registers(spec, ctx);
  } catch (err) {
    // A run that could not start is a result too (nothing ok), so the ladder records why.
    r = newResult(Math.round(spec.rate * spec.seconds));
    bump(r.errors, (err as Error).message);
  }
  const cpu = process.cpuUsage(cpu0);
  r.cpuUserMs = Math.round(cpu.user / 1000);
  r.cpuSystemMs = Math.round(cpu.system / 1000);
  process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0));
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
