/**
 * Tells TCP clients of a dead master that their connection died with it.
 *
 * A host crash leaves each client with an open connection to VIP:5060 that no
 * host holds any more. A phone that is quiet learns it only when it next
 * writes into it: the new master's kernel answers with a reset, and a phone
 * (baresip 1.0, FIELD-NOTES) does not send that request again, so the BYE of
 * an established call is lost. At takeover the new master sends each client
 * flow the old master had a "tickle ACK" (as CTDB does at an IP takeover): an
 * ACK from VIP:port with sequence numbers outside the window. The client
 * answers an unacceptable segment with an ACK carrying its real numbers (RFC
 * 9293 3.10.7.4), and this host's kernel, which has no such connection,
 * answers that with a reset whose sequence number is exactly what the client
 * expects. Its next request opens a new connection to the new master.
 *
 * Node has no raw sockets: Perl (perl-base is Essential in Debian, so in every
 * image) builds the segments and sends them on a raw IPPROTO_TCP socket bound
 * to the VIP (CAP_NET_RAW, as arping needs). Node only hands it "ip port"
 * lines, so a takeover with many flows costs the main thread a string, not a
 * buffer and a checksum per flow. `tickleSegment` below is the reference the
 * Perl sender is tested against.
 */
import { spawn } from 'node:child_process';
import { isIPv4 } from 'node:net';
import type { Logger } from '../log.ts';

export interface ClientFlow {
  address: string;
  port: number;
  /** A TLS client's flow: it came to the TLS port, so its tickle comes from there. */
  tls?: boolean;
}

/**
 * Reads "<ip> <port>" lines to the end, then sends two rounds of tickles, at
 * most `rate` a second: sequence number 0, then 2^31 (a window that happens to
 * hold 0 does not hold both), `againMs` apart (a client answers out-of-window
 * segments at most twice a second, and the first answer may meet a stale ARP
 * entry). Prints "e" for each failed send. SIPHA_TICKLE_DRY prints the
 * segments (hex) instead of sending them: the tests' view.
 */
export const SENDER = `use strict; use Socket;
my ($vip, $sport, $rate, $again) = @ARGV;
my $src = inet_aton($vip) or die "bad VIP $vip\\n";
my $dry = $ENV{SIPHA_TICKLE_DRY};
my $s;
unless ($dry) {
  socket($s, AF_INET, SOCK_RAW, 6) or die "socket: $!\\n";
  bind($s, pack_sockaddr_in(0, $src)) or die "bind $vip: $!\\n";
  setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1024);
}
$| = 1;
my @flows;
while (my $l = <STDIN>) { my ($d, $p) = split ' ', $l; my $dst = inet_aton($d); push @flows, [$d, $dst, $p] if $dst && $p; }
sub cks { my $x = 0; $x += $_ for unpack('n*', $_[0]); $x = ($x & 0xffff) + ($x >> 16) while $x >> 16; return ~$x & 0xffff; }
for my $seq (0, 2147483648) {
  my $n = 0;
  for my $f (@flows) {
    my $h = pack('nnNNCCnnn', $sport, $f->[2], $seq, 0, 0x50, 0x10, 1024, 0, 0);
    substr($h, 16, 2) = pack('n', cks($src . $f->[1] . pack('CCn', 0, 6, 20) . $h));
    if ($dry) { print unpack('H*', $h), "\\n"; }
    elsif (!defined send($s, $h, 0, pack_sockaddr_in(0, $f->[1]))) { print "e $f->[0] $!\\n"; }
    select(undef, undef, undef, 1) if ++$n % $rate == 0;
  }
  select(undef, undef, undef, $again / 1000) if $seq == 0;
}`;

/** The 20-byte segment the sender builds: ACK, sequence `seq`, acknowledgement 0, checksummed for src -> dst. */
export function tickleSegment(src: string, srcPort: number, dst: string, dstPort: number, seq = 0): Buffer {
  const seg = Buffer.alloc(20);
  seg.writeUInt16BE(srcPort, 0);
  seg.writeUInt16BE(dstPort, 2);
  seg.writeUInt32BE(seq, 4); // outside any window the client holds; ack (bytes 8-11) 0
  seg.writeUInt8(5 << 4, 12); // data offset: 5 words, no options
  seg.writeUInt8(0x10, 13); // ACK
  seg.writeUInt16BE(1024, 14); // window
  seg.writeUInt16BE(tcpChecksum(src, dst, seg), 16);
  return seg;
}

/** The TCP checksum over the IPv4 pseudo-header and the segment (its checksum field zero). */
export function tcpChecksum(src: string, dst: string, seg: Buffer): number {
  const pseudo = Buffer.alloc(12);
  ipv4Bytes(src).copy(pseudo, 0);
  ipv4Bytes(dst).copy(pseudo, 4);
  pseudo.writeUInt8(6, 9); // protocol TCP
  pseudo.writeUInt16BE(seg.length, 10);
  let sum = 0;
  for (const b of [pseudo, seg]) for (let i = 0; i < b.length; i += 2) sum += (b[i] as number) * 256 + (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function ipv4Bytes(ip: string): Buffer {
  if (!isIPv4(ip)) throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(ip.split('.').map(Number));
}

export interface TickleOptions {
  /** Tickles a second at most (a takeover with many flows spreads its resets, and the re-registrations that follow). */
  rate?: number;
  /** Between the two rounds. */
  againMs?: number;
}

/**
 * Tickles `flows` from vip:port. Resolves with how many sends failed; never
 * rejects or throws: a failure is logged, and the clients are no worse off
 * than without it.
 */
export function tickleFlows(
  vip: string,
  port: number,
  flows: readonly ClientFlow[],
  log: Logger,
  opts: TickleOptions = {},
): Promise<{ sent: number; failed: number }> {
  const usable = flows.filter((f) => isIPv4(f.address) && Number.isInteger(f.port) && f.port > 0 && f.port < 65536);
  if (usable.length === 0) return Promise.resolve({ sent: 0, failed: 0 });
  const total = usable.length * 2;
  return new Promise((resolve) => {
    let out = '';
    let errText = '';
    const args = ['-e', SENDER, vip, String(port), String(opts.rate ?? 5000), String(opts.againMs ?? 1000)];
    let perl: ReturnType<typeof spawn>;
    try {
      perl = spawn('perl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not start the TCP tickle sender');
      resolve({ sent: 0, failed: total });
      return;
    }
    perl.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    perl.stderr?.on('data', (b: Buffer) => {
      errText += b.toString();
    });
    perl.stdin?.on('error', () => {}); // a sender that died early says why on stderr and in its exit code
    perl.on('error', (err) => {
      log.warn({ err: err.message }, 'could not start the TCP tickle sender');
      resolve({ sent: 0, failed: total });
    });
    perl.on('exit', (code) => {
      const failed = out.split('\n').filter((l) => l.startsWith('e ')).length;
      if (code !== 0) {
        log.warn({ code, stderr: errText.trim() }, 'TCP tickle sender failed');
        resolve({ sent: 0, failed: total });
      } else resolve({ sent: total - failed, failed });
    });
    perl.stdin?.end(usable.map((f) => `${f.address} ${f.port}\n`).join(''));
  });
}
