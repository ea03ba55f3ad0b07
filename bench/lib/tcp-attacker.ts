/**
 * TCP attackers for the attack bench, run inside a bed host as
 *   node tcp-attacker.ts MODE TARGET_IP PORT MAX_SECONDS [COUNT]
 * and printing one JSON line of their own counters. Every loop is bounded in
 * count and time (MAX_SECONDS, at most 300).
 *
 *   edge:    against the public SIP port: COUNT connection attempts (connect,
 *            one OPTIONS, wait up to 1 s for the reply, reset), 2000 at a
 *            time; 1000 slowloris connections (an OPTIONS dripped a byte
 *            every 500 ms, never finished); one client that writes OPTIONS
 *            and never reads its replies (4 MiB at most).
 *   pump:    one connection, OPTIONS as fast as it takes them (200 a write),
 *            replies read, at most COUNT: the single-client flood of
 *            docs/security.md "Open".
 *   garbage: against the replication port: connections that each write
 *            16 KiB of random bytes and reset, 200 at a time, at most COUNT.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

const options = (target: string, tag: string, i: number) =>
  `OPTIONS sip:${target} SIP/2.0\r\nVia: SIP/2.0/TCP 198.18.0.10:40000;branch=z9hG4bK-${tag}${i}\r\n` +
  `From: <sip:a@x>;tag=1\r\nTo: <sip:${target}>\r\nCall-ID: ${tag}${i}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;

type Counters = Record<string, number>;
function edge(target: string, port: number, deadline: number, count: number, done: (c: Counters) => void): Counters {
  const c = {
    attempts: 0,
    connected: 0,
    answered: 0,
    failed: 0,
    slowloris_open: 0,
    slowloris_closed_by_server: 0,
    never_reader_bytes: 0,
    never_reader_cut: 0,
  };
  // Three parts; each says once that it is over.
  let pending = 3;
  const part = () => {
    let over = false;
    return () => {
      if (over) return;
      over = true;
      if (--pending === 0) done(c);
    };
  };
  const attemptsOver = part();
  const slowOver = part();
  const neverReaderOver = part();
  // Connection attempts, 2000 in flight.
  let inFlight = 0;
  const one = () => {
    if (c.attempts >= count || Date.now() >= deadline) {
      if (inFlight === 0) attemptsOver();
      return;
    }
    const i = c.attempts++;
    inFlight++;
    const s = net.connect(port, target);
    let over = false;
    const end = (ok: boolean) => {
      if (over) return;
      over = true;
      if (ok) c.answered++;
      else c.failed++;
      inFlight--;
      clearTimeout(timer);
      s.resetAndDestroy(); // RST: no TIME_WAIT on this side, so 50k attempts fit the port range
      setImmediate(one);
    };
    const timer = setTimeout(() => end(false), 1000);
    s.on('connect', () => {
      c.connected++;
      s.write(options(target, 'att', i));
    });
    s.on('data', () => end(true));
    s.on('error', () => end(false));
    s.on('close', () => end(false));
  };
  for (let k = 0; k < 2000; k++) one();
  // Slowloris: one byte every 500 ms; never a whole message.
  const msg = options(target, 'slow', 0);
  let slowOpen = 0;
  for (let k = 0; k < 1000; k++) {
    const s = net.connect(port, target);
    let at = 0;
    const t = setInterval(() => {
      if (Date.now() >= deadline) {
        clearInterval(t);
        s.destroy();
        return;
      }
      if (at < msg.length - 4) s.write(msg[at++] as string);
    }, 500);
    s.on('connect', () => {
      c.slowloris_open++;
      slowOpen++;
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      if (Date.now() < deadline) c.slowloris_closed_by_server++;
      clearInterval(t);
      if (--slowOpen <= 0 && Date.now() >= deadline) slowOver();
    });
  }
  setTimeout(slowOver, Math.max(0, deadline - Date.now()) + 2000);
  // The client that never reads.
  const nr = net.connect(port, target, () => {
    nr.pause();
    let i = 0;
    const t = setInterval(() => {
      if (Date.now() >= deadline || c.never_reader_bytes >= 4 << 20 || nr.destroyed) {
        clearInterval(t);
        nr.destroy();
        return;
      }
      for (let k = 0; k < 50; k++) {
        const m = options(target, 'nr', i++);
        c.never_reader_bytes += m.length;
        nr.write(m);
      }
    }, 10);
  });
  nr.on('error', () => {});
  nr.on('close', () => {
    if (Date.now() < deadline && c.never_reader_bytes < 4 << 20) c.never_reader_cut = 1;
    neverReaderOver();
  });
  return c;
}

function pump(target: string, port: number, deadline: number, count: number, done: (c: Counters) => void): Counters {
  const c = { sent: 0, reply_bytes: 0, closed_by_server: 0 };
  const s = net.connect(port, target, () => {
    const go = () => {
      if (Date.now() >= deadline || c.sent >= count) {
        s.end();
        return;
      }
      let chunk = '';
      for (let k = 0; k < 200 && c.sent < count; k++) chunk += options(target, 'p', c.sent++);
      if (s.write(chunk)) setImmediate(go);
      else s.once('drain', go);
    };
    go();
  });
  s.on('data', (d) => {
    c.reply_bytes += d.length;
  });
  s.on('error', () => {});
  s.on('close', () => {
    if (Date.now() < deadline && c.sent < count) c.closed_by_server = 1;
    done(c);
  });
  return c;
}

function garbage(target: string, port: number, deadline: number, count: number, done: (c: Counters) => void): Counters {
  const c = { attempts: 0, connected: 0, bytes: 0 };
  const junk = randomBytes(16 << 10);
  let inFlight = 0;
  const one = () => {
    if (c.attempts >= count || Date.now() >= deadline) {
      if (inFlight === 0) {
        inFlight = -1;
        done(c);
      }
      return;
    }
    c.attempts++;
    inFlight++;
    const s = net.connect(port, target);
    let over = false;
    const end = () => {
      if (over) return;
      over = true;
      inFlight--;
      s.resetAndDestroy();
      setImmediate(one);
    };
    s.on('connect', () => {
      c.connected++;
      c.bytes += junk.length;
      s.write(junk, end);
    });
    s.on('error', end);
    s.on('close', end);
  };
  for (let k = 0; k < 200; k++) one();
  return c;
}

if (process.argv[1]?.endsWith('tcp-attacker.ts')) {
  const [mode, target, portText, secondsText, countText] = process.argv.slice(2) as [string, string, string, string, string?];
  const deadline = Date.now() + Math.min(Number(secondsText), 300) * 1000;
  const count = Math.min(Number(countText ?? 50_000), 10_000_000);
  const port = Number(portText);
  const done = (c: Counters) => {
    console.log(JSON.stringify(c));
    process.exit(0);
  };
  const run = { edge, pump, garbage }[mode];
  if (!run) throw new Error(`unknown mode ${mode}`);
  const counters = run(target, port, deadline, count, done);
  // A hard stop: every mode ends by its deadline plus the time its last sockets take.
  setTimeout(() => done({ ...counters, timed_out: 1 }), deadline - Date.now() + 10_000).unref();
}
