/**
 * Hostile input against a serving pair (issue 9), on the netns bed with real
 * Kamailio and real sidecar processes: what an attacker on the node network
 * can do with recorded traffic and floods, without the pair's key.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { startCapture } from '../lib/capture.ts';
import { lookupAll, usrlocStat } from '../lib/kamailio.ts';
import type { Host, NetBed } from '../lib/netbed.ts';
import { type PairBed, type PairNode, pairBed, role, roleStory, VIP } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';
import { runSipp, users } from '../lib/sipp.ts';

const HEARTBEAT_PORT = 5062;

/** Runs a Node script on `host` that prints "<sent> <answered>" as it exits; resolves with both. */
function counted(host: Host, script: string): Promise<[number, number]> {
  const child = host.spawn(process.execPath, ['-e', script]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return new Promise((resolve) =>
    child.on('exit', () => resolve(out.trim().split(' ').slice(0, 2).map(Number) as [number, number])),
  );
}

/** `n` REGISTERs of fresh users at 100/s through the VIP from the uas host: a client of another address than the attacker's. */
function registerFromAnotherAddress(pb: PairBed, n: number) {
  return runSipp(pb.bed, pb.uas, {
    scenario: 'register.xml',
    target: `${VIP}:5060`,
    calls: n,
    rate: 100,
    users: users('legit', n),
  });
}

/** The UDP payloads to `port` in a capture, in wire order (hex, as tshark prints them). */
function udpPayloads(path: string, port: number): string[] {
  const out = execFileSync('tshark', ['-r', path, '-n', '-d', `udp.port==${port},data`, '-T', 'fields', '-e', 'data.data'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return out
    .split('\n')
    .map((l) => l.trim().replaceAll(':', ''))
    .filter((l) => l.length > 0);
}

/** Sends recorded datagrams from `from` to target:port, in order, every `gapMs`, `rounds` times over. */
function replay(from: Host, target: string, port: number, payloads: string[], gapMs: number, rounds: number): void {
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    const p = JSON.parse(process.argv[1]);
    let i = 0;
    const t = setInterval(() => {
      if (i >= p.length * ${rounds}) { clearInterval(t); s.close(); return; }
      s.send(Buffer.from(p[i++ % p.length], 'hex'), ${port}, '${target}');
    }, ${gapMs});`;
  from.run(process.execPath, ['-e', script, JSON.stringify(payloads)]);
}

/**
 * Sends recorded datagrams to target:port from a forged source (src:port), as an attacker on
 * the node network can: a raw socket in `from` writes the IPv4 and UDP headers itself (the
 * kernel fills the IP checksum and length; a UDP checksum of 0 means none).
 */
function replayForged(
  from: Host,
  src: string,
  target: string,
  port: number,
  payloads: string[],
  gapMs: number,
  rounds: number,
): void {
  const script = `use Socket;
    socket(my $s, AF_INET, SOCK_RAW, 255) or die "raw: $!";
    my ($src, $dst, $port, $gap, $rounds, @p) = @ARGV;
    for my $r (1 .. $rounds) { for my $h (@p) {
      my $udp = pack('nnnn', $port, $port, 8 + length($h) / 2, 0) . pack('H*', $h);
      my $ip = pack('CCnnnCCn', 0x45, 0, 20 + length($udp), 0, 0x4000, 64, 17, 0) . inet_aton($src) . inet_aton($dst);
      send($s, $ip . $udp, 0, pack_sockaddr_in(0, inet_aton($dst))) or die "send: $!";
      select(undef, undef, undef, $gap / 1000);
    } }`;
  from.run('perl', ['-e', script, src, target, String(port), String(gapMs), String(rounds), ...payloads]);
}

const switchover = (n: PairNode) => n.host.run('curl', ['-s', '-m', '10', '-X', 'POST', 'http://127.0.0.1:9090/switchover']);
const roleChanges = (n: PairNode) =>
  n.sidecar
    .output()
    .split('\n')
    .filter((l) => l.includes('role change')).length;

describe('recorded heartbeats replayed into a serving pair (issue 9 item 1)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it("beats from the master's earlier start (master, resigned, backup) change no role when replayed", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { b, client } = pb;
    // Record a's beats while it is master, hands over (resigned) and rejoins as backup: start 1.
    const cap = await startCapture(bed, pb.a.host, `udp and src host ${pb.a.host.ip} and dst port ${HEARTBEAT_PORT}`);
    await sleep(300);
    assert.match(switchover(pb.a), /switched over/);
    await until(() => role(pb.a) === 'backup' && role(b) === 'master', 5000, 'b took over, a rejoined');
    await sleep(300);
    const recorded = udpPayloads(await cap.stop(), HEARTBEAT_PORT);
    assert.ok(recorded.length >= 20, `recorded ${recorded.length} beats`);

    // a restarts (start 2) and becomes master again by a switchover: a different incarnation.
    await bed.stop(pb.a.sidecar.child, 'SIGTERM');
    const a = await pb.a.restartSidecar();
    await until(() => role(a) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'a rejoined in sync');
    assert.match(switchover(b), /switched over/);
    await until(() => role(a) === 'master' && role(b) === 'backup', 5000, 'a is master again');
    await sleep(500);

    // The attacker replays start 1's beats to b: from its own address (b's heartbeat socket is
    // connected to a: the kernel drops them), then forging a's address and port (judged by key
    // and freshness: stale).
    const before = [roleChanges(a), roleChanges(b)];
    replay(client, b.host.ip, HEARTBEAT_PORT, recorded, 5, 2);
    replayForged(client, a.host.ip, b.host.ip, HEARTBEAT_PORT, recorded, 5, 2);
    await sleep(500);
    assert.deepEqual([roleChanges(a), roleChanges(b)], before, `no role changed\n${roleStory(a, b)}`);
    assert.equal(role(a), 'master');
    assert.equal(role(b), 'backup');
    assert.ok(
      b.sidecar.metric('sipha_heartbeats_dropped_total', { reason: 'stale' }) >= recorded.length,
      'the replayed beats were counted as stale',
    );
  });
});

describe('a flood of REGISTERs the server rejects (issue 9 item 5)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('leaves nothing in the state cache and gets no keepalives; authenticated ones are kept and replicated', async () => {
    // Digest auth in the example configuration; both servers share the nonce secret.
    const kamailio = {
      defines: ['WITH_AUTH'],
      env: { SIPHA_AUTH_PASSWORD: 'demo-password', SIPHA_AUTH_SECRET: 'pair-shared-secret' },
    };
    const pb = await pairBed({ SIPHA_NAT_KEEPALIVE_MS: '200' }, { kamailio });
    bed = pb.bed;
    const { a, b, client } = pb;
    const target = `${VIP}:5060`;
    // 2000 REGISTERs with fresh Call-IDs and no credentials: every one answered 401.
    const flood = await runSipp(bed, client, {
      scenario: 'register.xml',
      target,
      calls: 2000,
      rate: 1000,
      users: users('x', 2000),
      timeoutS: 20,
    });
    assert.equal(flood.successful, 0, 'the server accepted none');
    await sleep(300);
    for (const n of [a, b]) {
      assert.equal(
        n.sidecar.metric('sipha_state_cache_entries', { kind: 'registrations' }),
        0,
        `${n.host.name} keeps no rejected REGISTER`,
      );
      assert.equal(
        n.sidecar.metric('sipha_state_cache_entries', { kind: 'pending' }),
        0,
        `${n.host.name} keeps no answered REGISTER pending`,
      );
    }
    assert.equal(usrlocStat(a.kamailio, 'registered_users'), 0);
    // Registered users with credentials: kept, and the backup's server (same nonce secret) accepts the replicated ones.
    const aors = users('auth', 50);
    const ok = await runSipp(bed, client, {
      scenario: 'register-auth.xml',
      target,
      calls: 50,
      rate: 100,
      users: aors,
      localPort: 5070,
    });
    assert.equal(ok.successful, 50, ok.errors);
    await until(
      () => a.sidecar.metric('sipha_state_cache_entries', { kind: 'registrations' }) === 50,
      3000,
      'the master keeps the 50',
    );
    await until(() => lookupAll(b.kamailio, aors).size === 50, 5000, "the backup's server holds the 50");
    // Keepalives (every 200 ms here) go to the authenticated client's port only, never to the 401ed source (port 5060).
    const toRejected = await startCapture(bed, client, `udp and src host ${VIP} and dst port 5060`);
    const toAccepted = await startCapture(bed, client, `udp and src host ${VIP} and dst port 5070`);
    await sleep(1000);
    const rejected = udpPayloads(await toRejected.stop(), 5060);
    const accepted = udpPayloads(await toAccepted.stop(), 5070);
    assert.equal(rejected.length, 0, 'no keepalive to a source the server rejected');
    assert.ok(
      accepted.length >= 2 && accepted.every((p) => p === '0d0a0d0a'),
      `keepalives to the registered client: ${accepted}`,
    );
  });
});

/** Opens `n` TCP connections from `host` to target:port; the script holds them for `holdMs` and prints how many the far end closed. */
function tcpClients(
  host: Host,
  target: string,
  port: number,
  n: number,
  holdMs: number,
  behaviour: 'silent' | 'drip' | 'one-message',
): number {
  const script = `
    const net = require('node:net');
    let closed = 0, open = 0;
    const msg = 'OPTIONS sip:${target} SIP/2.0\\r\\nVia: SIP/2.0/TCP 198.18.0.10;branch=z9hG4bKtcp\\r\\nFrom: <sip:t@x>;tag=1\\r\\nTo: <sip:${target}>\\r\\nCall-ID: tcp\\r\\nCSeq: 1 OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n';
    for (let i = 0; i < ${n}; i++) {
      const s = net.connect(${port}, '${target}', () => {
        open++;
        if ('${behaviour}' === 'one-message') s.write(msg);
        if ('${behaviour}' === 'drip') { let k = 0; const t = setInterval(() => { if (s.destroyed || k >= msg.length - 4) return clearInterval(t); s.write(msg[k++]); }, 100); }
      });
      s.on('data', () => {});
      s.on('error', () => {});
      s.on('close', () => closed++);
    }
    setTimeout(() => { console.log(closed); process.exit(0); }, ${holdMs});`;
  return Number(host.run(process.execPath, ['-e', script]).trim());
}

describe('TCP at the public edge: caps, timeouts, accept errors (issue 9 item 6)', { timeout: 240_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('past SIPHA_TCP_MAX_FLOWS new connections are closed and counted; slow and idle ones are closed by time', async () => {
    const pb = await pairBed({ SIPHA_TCP_MAX_FLOWS: '20', SIPHA_TCP_HEADER_TIMEOUT_MS: '1000', SIPHA_TCP_IDLE_MS: '1500' });
    bed = pb.bed;
    const { a, client } = pb;
    assert.equal(tcpClients(client, VIP, 5060, 40, 1500, 'one-message') >= 20, true, 'the 20 past the cap were closed');
    assert.ok(a.sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: 'tcp-flows-full' }) >= 20);
    // Slowloris: a request dripped a byte every 100 ms never completes within the 1 s header timeout.
    assert.equal(tcpClients(client, VIP, 5060, 5, 2500, 'drip'), 5, 'dripping connections closed');
    assert.ok(a.sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: 'tcp-header-timeout' }) >= 5);
    // Connected and silent: no first message within the header timeout either.
    assert.equal(tcpClients(client, VIP, 5060, 5, 2500, 'silent'), 5, 'silent connections closed');
    // One message, then idle past SIPHA_TCP_IDLE_MS.
    assert.equal(tcpClients(client, VIP, 5060, 5, 3000, 'one-message'), 5, 'idle connections closed');
    assert.ok(a.sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: 'tcp-idle' }) >= 5);
    assert.equal(role(a), 'master');
  });

  it('a client that never reads is cut off once SIPHA_TCP_MAX_WRITE_BUFFER bytes wait for it', async () => {
    await bed?.destroy();
    const pb = await pairBed({ SIPHA_TCP_MAX_WRITE_BUFFER: '65536' });
    bed = pb.bed;
    const { a, client } = pb;
    // Small kernel buffers on both ends (sockets opened from now on), so that the replies
    // pile up in the sidecar's own write buffer after a few hundred, at a rate it easily serves.
    client.run('sysctl', ['-qw', 'net.ipv4.tcp_rmem=4096 4096 4096']);
    a.host.run('sysctl', ['-qw', 'net.ipv4.tcp_wmem=4096 4096 4096']);
    const script = `
      const net = require('node:net');
      const one = (i) => 'OPTIONS sip:${VIP} SIP/2.0\\r\\nVia: SIP/2.0/TCP 198.18.0.10;branch=z9hG4bKnr' + i + '\\r\\nFrom: <sip:t@x>;tag=1\\r\\nTo: <sip:${VIP}>\\r\\nCall-ID: nr' + i + '\\r\\nCSeq: 1 OPTIONS\\r\\nContent-Length: 0\\r\\n\\r\\n';
      const s = net.connect(5060, '${VIP}', () => {
        s.pause(); // never read
        let i = 0;
        const t = setInterval(() => { for (let k = 0; k < 20 && i < 4000; k++) s.write(one(i++)); if (i >= 4000) clearInterval(t); }, 20);
      });
      s.on('error', () => {});
      s.on('close', () => { console.log('closed'); process.exit(0); });
      setTimeout(() => { console.log('open'); process.exit(0); }, 15000);`;
    assert.equal(client.run(process.execPath, ['-e', script]).trim(), 'closed', 'the sidecar closed the flow');
    assert.ok(
      a.sidecar.metric('sipha_messages_dropped_total', { path: 'egress', reason: 'tcp-write-backlog' }) >= 1,
      roleStory(a, pb.b),
    );
    assert.equal(role(a), 'master', roleStory(a, pb.b));
  });

  it('a master out of file descriptors does not crash: it stands down when it cannot keep its VIP, and the pair serves on', async () => {
    await bed?.destroy();
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client } = pb;
    const pid = a.sidecar.child.pid as number;
    // (child.exitCode lags behind: the synchronous calls below keep its exit event waiting.)
    const alive = () => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    // The sidecar runs under `ip netns exec` (which execs): its PID is the node process's.
    const fds = Number(execFileSync('sh', ['-c', `ls /proc/${pid}/fd | wc -l`], { encoding: 'utf8' }).trim());
    // The soft limit only: lowering the hard one could not be undone (no CAP_SYS_RESOURCE here).
    const soft = execFileSync('prlimit', ['--pid', String(pid), '--nofile', '-o', 'SOFT', '--noheadings'], {
      encoding: 'utf8',
    }).trim();
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${fds + 5}:`]);
    tcpClients(client, VIP, 5060, 30, 1500, 'one-message');
    assert.ok(alive(), `the sidecar is alive\n${a.sidecar.output().slice(-3000)}`);
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]);
    // Spawning ip for the VIP refresh failed (EMFILE): before, a TypeError ended the process.
    await until(
      () => [role(a), role(b)].filter((r) => r === 'master').length === 1 && role(a) !== 'down',
      5000,
      'one master',
      () => roleStory(a, b),
    );
    assert.ok(alive(), `the sidecar is alive\n${a.sidecar.output().slice(-3000)}`);
    const opt = await runSipp(bed, client, { scenario: 'options.xml', target: `${VIP}:5060`, calls: 10, rate: 20 });
    assert.equal(opt.successful, 10);
  });
});

/** The TCP payload sent to `port` in a capture, joined in wire order. */
function tcpStream(path: string, port: number): Buffer {
  const out = execFileSync(
    'tshark',
    ['-r', path, '-n', '-Y', `tcp.dstport==${port} && tcp.len>0`, '-T', 'fields', '-e', 'tcp.payload'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  return Buffer.concat(
    out
      .split('\n')
      .map((l) => l.trim().replaceAll(':', ''))
      .filter((l) => l.length > 0)
      .map((h) => Buffer.from(h, 'hex')),
  );
}

describe('a recorded replication stream replayed into the backup (issue 9 item 3)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('applies nothing and leaves the live stream alone', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, client } = pb;
    const target = `${VIP}:5060`;
    // Record a whole stream, from its HELLO: the backup's sidecar restarts while we listen.
    const cap = await startCapture(bed, pb.b.host, `tcp and dst port 5063`);
    await bed.stop(pb.b.sidecar.child, 'SIGTERM');
    const b = await pb.b.restartSidecar();
    await until(() => role(b) === 'backup' && b.sidecar.metric('sipha_in_sync') === 1, 10000, 'b rejoined in sync');
    const aors = users('old', 50);
    assert.equal(
      (await runSipp(bed, client, { scenario: 'register.xml', target, calls: 50, rate: 100, users: aors })).successful,
      50,
    );
    await until(() => lookupAll(b.kamailio, aors).size === 50, 5000, 'the backup holds the 50');
    const recorded = tcpStream(await cap.stop(), 5063);
    assert.ok(recorded.length > 50 * 300, `recorded ${recorded.length} bytes`);
    // The 50 go away on both servers (expired, say).
    for (const n of [a, b]) n.kamailio.kamcmd([], `${aors.map((u) => `ul.rm location ${u}`).join('\n')}\n`);
    assert.equal(lookupAll(b.kamailio, aors).size, 0);
    const resyncs = a.sidecar.metric('sipha_replication_resyncs_total');
    const closedBefore = a.sidecar
      .output()
      .split('\n')
      .filter((l) => l.includes('replication connection closed')).length;
    // The attacker (on the node network, without the key) replays the recorded bytes to the backup.
    const script = `
      const s = require('node:net').connect(5063, '${b.host.ip}', () => s.end(Buffer.from(process.argv[1], 'hex')));
      s.on('data', () => {}); s.on('error', () => {}); s.on('close', () => process.exit(0));
      setTimeout(() => process.exit(0), 3000);`;
    client.run(process.execPath, ['-e', script, recorded.toString('hex')]);
    await sleep(500);
    assert.equal(lookupAll(b.kamailio, aors).size, 0, "nothing of the recording reached the backup's server");
    assert.equal(a.sidecar.metric('sipha_replication_resyncs_total'), resyncs);
    assert.equal(
      a.sidecar
        .output()
        .split('\n')
        .filter((l) => l.includes('replication connection closed')).length,
      closedBefore,
      'the live stream was not dropped',
    );
    assert.equal(b.sidecar.metric('sipha_in_sync'), 1);
  });
});

describe('loopback is not private under hostNetwork: the link and the egress port (issue 9 item 8)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  /** Sends `text` from a process on `host` (any process on the node): TCP to 127.0.0.1:<port>, or UDP. */
  const sendLocal = (host: Host, proto: 'tcp' | 'udp', port: number, text: string) => {
    const script =
      proto === 'tcp'
        ? `const s = require('node:net').connect(${port}, '127.0.0.1', () => s.write(process.argv[1]));
           s.on('data', () => {}); setTimeout(() => s.destroy(), 500);`
        : `const s = require('node:dgram').createSocket('udp4');
           s.send(Buffer.from(process.argv[1]), ${port}, '127.0.0.1', () => s.close());`;
    host.run(process.execPath, ['-e', script, text]);
  };

  it("a process on the node can neither register through Kamailio's link nor send from the VIP through the egress port", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, client } = pb;
    // A REGISTER straight into Kamailio's link listener, claiming a client's source.
    const forged = [
      'REGISTER sip:198.18.0.100 SIP/2.0',
      'X-Sipha-Src: udp:198.18.0.66:5060',
      'Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bK-forged-1',
      'From: <sip:victim@198.18.0.100>;tag=f1',
      'To: <sip:victim@198.18.0.100>',
      'Call-ID: forged-1',
      'CSeq: 1 REGISTER',
      'Contact: <sip:victim@198.18.0.66:5060>',
      'Expires: 3600',
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
    sendLocal(a.host, 'tcp', 5070, forged);
    // A request into the egress port, naming the client as its next hop: it would leave from the VIP.
    const cap = await startCapture(bed, client, `udp and src host ${VIP} and dst port 5099`);
    const out = [
      'MESSAGE sip:x@198.18.0.10:5099 SIP/2.0',
      'X-Sipha-Nh: sip:198.18.0.10:5099',
      'Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-forged-2',
      'From: <sip:bank@198.18.0.100>;tag=f2',
      'To: <sip:x@198.18.0.10>',
      'Call-ID: forged-2',
      'CSeq: 1 MESSAGE',
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
    sendLocal(a.host, 'udp', 5061, out);
    await sleep(1000);
    const sent = udpPayloads(await cap.stop(), 5099);
    assert.equal(sent.length, 0, 'nothing left the VIP for the forger');
    assert.equal(lookupAll(a.kamailio, ['victim']).size, 0, 'no binding made through the link by the forger');
    assert.ok(a.sidecar.metric('sipha_messages_dropped_total', { path: 'egress', reason: 'link-token' }) >= 1, 'counted');
    // The pair still serves its real clients.
    const ok = await runSipp(bed, client, {
      scenario: 'register.xml',
      target: `${VIP}:5060`,
      calls: 20,
      rate: 50,
      users: users('tok', 20),
    });
    assert.equal(ok.successful, 20);
  });
});

describe('one client floods a TCP connection with requests (messages spanning reads)', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('nothing corrupt reaches the server or the backup, and nobody fails over', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client } = pb;
    // As fast as the connection takes them, 200 OPTIONS per write (so messages straddle the
    // sidecar's reads), 6,000 in all or 3 s; replies are read (a client that reads is no
    // slowloris). The sidecar paces the connection (SIPHA_TCP_FLOW_RATE): its reads still end
    // inside messages, which is this test's point. Unpaced, on a busy 2-core machine, such a
    // flood starved the main thread past the VIP refresh (the next test is the pump).
    const MAX = 6_000;
    const script = `
      const one = (i) => 'OPTIONS sip:${VIP} SIP/2.0\\r\\nVia: SIP/2.0/TCP ${client.ip}:40000;branch=z9hG4bK-f' + i +
        '\\r\\nFrom: <sip:f@x>;tag=1\\r\\nTo: <sip:x@y>\\r\\nCall-ID: f' + i + '\\r\\nCSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n';
      let n = 0;
      const until = Date.now() + 3000;
      const s = require('node:net').connect(5060, '${VIP}', () => {
        const pump = () => {
          if (Date.now() >= until || n >= ${MAX}) { console.log(n); s.end(); return; }
          let chunk = '';
          for (let k = 0; k < 200; k++) chunk += one(n++);
          if (s.write(chunk)) setImmediate(pump); else s.once('drain', pump);
        };
        pump();
      });
      s.on('data', () => {});
      s.on('error', (e) => { console.log(n, e.message); process.exit(0); });`;
    const sent = Number.parseInt(client.run(process.execPath, ['-e', script]), 10);
    assert.ok(sent > 5_000, `the flood was a flood (${sent} requests)`);
    await sleep(1000);
    assert.doesNotMatch(b.sidecar.output(), /bad replication frame/, 'the stream to the backup stayed intact');
    assert.doesNotMatch(a.sidecar.output(), /link to the SIP server closed/, 'the server never closed the link');
    assert.equal(role(a), 'master', roleStory(a, b));
    assert.equal(role(b), 'backup', roleStory(a, b));
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 10000, 'the backup in sync after the flood');
  });
});

describe('one client pumps requests into a TCP connection for 8 s, as fast as it can, unbounded in count', {
  timeout: 180_000,
}, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('is paced to SIPHA_TCP_FLOW_RATE (nothing dropped); other clients register meanwhile; nobody fails over', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const { a, b, client } = pb;
    const pump = `
      const one = (i) => 'OPTIONS sip:${VIP} SIP/2.0\\r\\nVia: SIP/2.0/TCP ${client.ip}:40000;branch=z9hG4bK-p' + i +
        '\\r\\nFrom: <sip:p@x>;tag=1\\r\\nTo: <sip:x@y>\\r\\nCall-ID: p' + i + '\\r\\nCSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n';
      let n = 0;
      let answered = 0;
      // Counted at 8 s sharp (a paced pump may wait for 'drain' well past it).
      setTimeout(() => { console.log(n, answered); process.exit(0); }, 8000);
      const s = require('node:net').connect(5060, '${VIP}', () => {
        const go = () => {
          let chunk = '';
          for (let k = 0; k < 200; k++) chunk += one(n++);
          if (s.write(chunk)) setImmediate(go); else s.once('drain', go);
        };
        go();
      });
      s.on('data', (d) => { answered += d.toString('latin1').split('SIP/2.0 200').length - 1; });
      s.on('error', (e) => { console.log(n, answered, e.message); process.exit(0); });`;
    // What the sidecar took is what was answered (what the pump wrote sits partly in socket buffers).
    const done = counted(client, pump).then(([, answered]) => answered);
    await sleep(1000);
    // A legitimate client from another address registers while the pump runs.
    const reg = await registerFromAnotherAddress(pb, 500);
    assert.equal(reg.successful, 500, 'every legitimate REGISTER answered during the pump');
    const answered = await done;
    // Served, at about the rate: 8 s at 1000 a second, one second's burst, and what the read that
    // went over it carried. Unpaced, the pump's own replies sat behind its backlog (0 answered in 8 s).
    assert.ok(answered > 0 && answered <= 10 * 1000, `the pump got about SIPHA_TCP_FLOW_RATE (${answered} answered in 8 s)`);
    assert.ok(a.sidecar.metric('sipha_tcp_flow_pauses_total') >= 1, 'the pump was paced');
    assert.equal(role(a), 'master', roleStory(a, b));
    assert.equal(role(b), 'backup', roleStory(a, b));
    await until(() => a.sidecar.metric('sipha_in_sync') === 1, 10000, 'the backup in sync after the pump');
  });
});

describe('one address sends requests faster than SIPHA_REQUEST_RATE_PER_ADDRESS, by UDP and on several TCP connections', {
  timeout: 240_000,
}, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });
  const RATE = 300;
  /** An OPTIONS from `ip` whose branch and Call-ID end in `i`. */
  const optionsText = (transport: string, i: string, ip: string) =>
    `OPTIONS sip:${VIP} SIP/2.0\r\nVia: SIP/2.0/${transport} ${ip}:40000;rport;branch=z9hG4bK-f${i}\r\nFrom: <sip:f@x>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: f${i}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n`;
  /** The same as a JS expression in the scripts below, ending in the value of their variable `i`. */
  const options = (transport: string, i: string, ip: string) =>
    optionsText(transport, '@@', ip)
      .split('@@')
      .map((part) => JSON.stringify(part))
      .join(` + ${i} + `);

  it('it gets about the rate (datagrams past it dropped and counted, connections paused); another address registers meanwhile; nobody fails over', async () => {
    const pb = await pairBed({ SIPHA_REQUEST_RATE_PER_ADDRESS: String(RATE), SIPHA_REQUEST_BURST_PER_ADDRESS: String(RATE) });
    bed = pb.bed;
    const { a, b, client } = pb;
    // 5 s of UDP at 2,000 a second (10,000 requests, bounded), answers counted at 6 s.
    const udp = counted(
      client,
      `const s = require('node:dgram').createSocket('udp4');
      let n = 0, answered = 0;
      s.on('message', (d) => { if (d.toString('latin1').startsWith('SIP/2.0 200')) answered++; });
      const t = setInterval(() => { for (let k = 0; k < 20 && n < 10000; k++) { const i = n++; s.send(${options('UDP', 'i', client.ip)}, 5060, '${VIP}'); } }, 10);
      setTimeout(() => { clearInterval(t); console.log(n, answered); process.exit(0); }, 6000);`,
    );
    await sleep(500);
    const reg = await registerFromAnotherAddress(pb, 300);
    assert.equal(reg.successful, 300, 'every REGISTER of the other address answered during the flood');
    const [sent, answered] = await udp;
    assert.equal(sent, 10000);
    // 6 s at the rate after a burst of one second's worth: 2,100 at most (some slack for the timer).
    assert.ok(answered > RATE && answered <= 7 * RATE + 100, `${answered} of ${sent} answered`);
    const dropped = a.sidecar.metric('sipha_messages_dropped_total', { path: 'inbound', reason: 'address-rate' });
    assert.ok(dropped >= sent - answered - 100, `dropped ${dropped} of ${sent}, ${answered} answered`);

    // Four TCP connections of one address pump for 6 s: together they get the address's rate, not
    // four times SIPHA_TCP_FLOW_RATE (1000 each).
    await sleep(2000); // the address's bucket refills
    const pumps = [0, 1, 2, 3].map((c) =>
      counted(
        client,
        `let n = 0, answered = 0;
        setTimeout(() => { console.log(n, answered); process.exit(0); }, 6000);
        const s = require('node:net').connect(5060, '${VIP}', () => {
          const go = () => { let chunk = ''; for (let k = 0; k < 200; k++) { const i = ${c} * 1e7 + n++; chunk += ${options('TCP', 'i', client.ip)}; } if (s.write(chunk)) setImmediate(go); else s.once('drain', go); };
          go();
        });
        s.on('data', (d) => { answered += d.toString('latin1').split('SIP/2.0 200').length - 1; });
        s.on('error', () => { console.log(n, answered); process.exit(0); });`,
      ),
    );
    const got = (await Promise.all(pumps)).map(([, n]) => n);
    const total = got.reduce((x, y) => x + y, 0);
    // Each connection pauses after the read that took it past the rate: one 64 KiB read's worth
    // of messages each over the address's burst and 6 s (7, with slack) at the rate. Before:
    // each connection had SIPHA_TCP_FLOW_RATE (1000) of its own.
    const perRead = Math.ceil(65536 / optionsText('TCP', '0', client.ip).length);
    const bound = RATE + 7 * RATE + 4 * perRead;
    assert.ok(total > RATE && total <= bound, `the four connections got ${got.join(' + ')} = ${total} in 6 s (bound ${bound})`);
    assert.ok(a.sidecar.metric('sipha_tcp_flow_pauses_total') >= 1, 'the connections were paused');
    assert.equal(role(a), 'master', roleStory(a, b));
    assert.equal(role(b), 'backup', roleStory(a, b));
  });
});
