/**
 * Packet capture on a bed host's interface (tcpdump), read back with tshark.
 * Wire timestamps are the kernel's, in microseconds: latency measured here
 * does not depend on the load generator's clock resolution. Immediate mode:
 * without it packets wait in the kernel's ring until a block fills or times
 * out (about 1 s), and that block is lost when tcpdump is stopped.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { Host, NetBed } from './netbed.ts';
import { watchOutput } from './procs.ts';

export interface Capture {
  readonly path: string;
  stop(): Promise<string>;
}

let n = 0;

export async function startCapture(bed: NetBed, host: Host, filter: string, iface = host.iface): Promise<Capture> {
  const path = join(bed.subdir('pcap'), `${host.name}-${++n}.pcap`);
  const child: ChildProcess = host.spawn('tcpdump', [
    '-i',
    iface,
    '--immediate-mode',
    '-U',
    '-n',
    '-s',
    '0',
    '-B',
    '16384',
    '-w',
    path,
    filter,
  ]);
  await watchOutput(child).waitFor(/listening on/, 10000);
  return {
    path,
    stop: async () => {
      await new Promise((r) => setTimeout(r, 200)); // let the last packets land
      await bed.stop(child, 'SIGINT');
      return path;
    },
  };
}

export interface SipPacket {
  time: number;
  src: string;
  dst: string;
  callId: string;
  cseq: string;
  method: string;
  status: number;
}

/** Every SIP message in a capture (UDP and TCP), in wire order. */
export function readSip(path: string): SipPacket[] {
  const out = execFileSync(
    'tshark',
    [
      '-r',
      path,
      '-n',
      '-Y',
      'sip',
      '-T',
      'fields',
      '-E',
      'separator=|',
      '-e',
      'frame.time_epoch',
      '-e',
      'ip.src',
      '-e',
      'ip.dst',
      '-e',
      'sip.Call-ID',
      '-e',
      'sip.CSeq.seq',
      '-e',
      'sip.CSeq.method',
      '-e',
      'sip.Status-Code',
    ],
    { encoding: 'utf8', maxBuffer: 512 << 20, stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const packets: SipPacket[] = [];
  for (const line of out.split('\n')) {
    if (line === '') continue;
    const [t, src, dst, callId, seq, method, status] = line.split('|');
    packets.push({
      time: Number(t),
      src: src ?? '',
      dst: dst ?? '',
      callId: callId ?? '',
      cseq: seq ?? '',
      method: method ?? '',
      status: Number(status || 0),
    });
  }
  return packets;
}

/**
 * Request -> first final response times (µs) for requests `from` sent, as
 * seen on the wire (retransmissions ignored: first request, first answer).
 */
export function transactionLatenciesUs(packets: SipPacket[], from: string, method?: string): number[] {
  const sent = new Map<string, number>();
  const result: number[] = [];
  for (const p of packets) {
    const key = `${p.callId}|${p.cseq}|${p.method}`;
    if (p.status === 0 && p.src === from) {
      if ((method === undefined || p.method === method) && !sent.has(key)) sent.set(key, p.time);
    } else if (p.status >= 200 && p.dst === from) {
      const t0 = sent.get(key);
      if (t0 !== undefined) {
        result.push((p.time - t0) * 1e6);
        sent.delete(key);
      }
    }
  }
  return result;
}

/** Number of packets in a capture file. */
export function countPackets(path: string): number {
  const out = execFileSync('tshark', ['-r', path, '-n', '-T', 'fields', '-e', 'frame.number'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}
