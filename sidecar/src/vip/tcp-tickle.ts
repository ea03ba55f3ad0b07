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
 * answers with an ACK carrying its real numbers (RFC 793 / RFC 5961), and this
 * host's kernel, which has no such connection, answers that with a reset the
 * client accepts. Its next request opens a new connection to the new master.
 *
 * Node has no raw sockets: the segments are built here and handed to Perl
 * (perl-base is Essential in Debian, so in every image), which sends them on a
 * raw IPPROTO_TCP socket bound to the VIP (CAP_NET_RAW, as arping needs).
 */
import { spawn } from 'node:child_process';
import type { Logger } from '../log.ts';

export interface ClientFlow {
  address: string;
  port: number;
}

/** Reads "<dst> <hex>" lines and sends each segment from the VIP; "e" for each failed send. */
const SENDER = `use Socket;
socket(my $s, AF_INET, SOCK_RAW, 6) or die "socket: $!\\n";
bind($s, pack_sockaddr_in(0, inet_aton($ARGV[0]))) or die "bind $ARGV[0]: $!\\n";
$| = 1;
while (my $l = <STDIN>) {
  my ($d, $h) = split ' ', $l;
  print "e $d $!\\n" unless defined send($s, pack('H*', $h), 0, pack_sockaddr_in(0, inet_aton($d)));
}`;

/** A 20-byte TCP header: ACK, sequence and acknowledgement 0, checksummed for src -> dst. */
export function tickleSegment(src: string, srcPort: number, dst: string, dstPort: number): Buffer {
  const seg = Buffer.alloc(20);
  seg.writeUInt16BE(srcPort, 0);
  seg.writeUInt16BE(dstPort, 2);
  // seq 0, ack 0: outside any window the client holds (bytes 4-11 stay zero)
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
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255))
    throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(parts);
}

/**
 * Sends one round of tickles now and one `againMs` later (a client answers
 * out-of-window segments at most twice a second, and the first answer may
 * meet a stale ARP entry). Resolves with the number of sends that failed;
 * never rejects: a failure is logged, and the clients are no worse off than
 * without it.
 */
export function tickleFlows(
  vip: string,
  port: number,
  flows: readonly ClientFlow[],
  log: Logger,
  againMs = 1000,
): Promise<{ sent: number; failed: number }> {
  if (flows.length === 0) return Promise.resolve({ sent: 0, failed: 0 });
  const lines = flows.map((f) => `${f.address} ${tickleSegment(vip, port, f.address, f.port).toString('hex')}\n`).join('');
  return new Promise((resolve) => {
    let failed = 0;
    let errText = '';
    const perl = spawn('perl', ['-e', SENDER, vip], { stdio: ['pipe', 'pipe', 'pipe'] });
    perl.stdout.on('data', (b: Buffer) => {
      failed += b
        .toString()
        .split('\n')
        .filter((l) => l.startsWith('e ')).length;
    });
    perl.stderr.on('data', (b: Buffer) => {
      errText += b.toString();
    });
    perl.stdin.on('error', () => {}); // a sender that died early says why on stderr and in its exit code
    perl.on('error', (err) => {
      log.warn({ err: err.message }, 'could not start the TCP tickle sender');
      resolve({ sent: 0, failed: flows.length * 2 });
    });
    perl.on('exit', (code) => {
      if (code !== 0) {
        log.warn({ code, stderr: errText.trim() }, 'TCP tickle sender failed');
        resolve({ sent: 0, failed: flows.length * 2 });
      } else resolve({ sent: flows.length * 2 - failed, failed });
    });
    perl.stdin.write(lines);
    setTimeout(() => perl.stdin.end(lines), againMs).unref();
  });
}
