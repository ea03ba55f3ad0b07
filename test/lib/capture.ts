/**
 * Packet capture on a bed host's interface (tcpdump), read back with tshark.
 * Wire timestamps are the kernel's, in microseconds: latency measured here
 * does not depend on the load generator's clock resolution. Immediate mode:
 * without it packets wait in the kernel's ring until a block fills or times
 * out (about 1 s), and that block is lost when tcpdump is stopped.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Host, NetBed } from './netbed.ts';
import { watchOutput } from './procs.ts';

export interface Capture {
  readonly path: string;
  stop(): Promise<string>;
  /** After stop: the packets tcpdump says the kernel dropped (its buffer full: the capture misses them); null if not said. */
  kernelDrops(): number | null;
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
  const output = watchOutput(child);
  await output.waitFor(/listening on/, 10000);
  return {
    path,
    kernelDrops: () => {
      const m = /(\d+) packets? dropped by kernel/.exec(output.text());
      return m ? Number(m[1]) : null;
    },
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
  /** readSipUdp only: the top Via's branch (which transaction), and whether a request carries a Route. */
  branch?: string;
  hasRoute?: boolean;
  /** The frame's MAC addresses (readSipUdp, Ethernet captures): which host a VIP packet really went to. */
  srcMac?: string;
  dstMac?: string;
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
 * The UDP SIP messages of a capture, as readSip gives them, read straight from the pcap file:
 * a soak's 300 MB capture takes tshark's SIP dissector over 6 minutes and this a few seconds.
 * Classic pcap (what tcpdump -w writes), Ethernet or Linux cooked frames, IPv4, unfragmented
 * UDP; anything else is skipped (TCP flows: use readSip).
 */
export function readSipUdp(path: string): SipPacket[] {
  const f = readFileSync(path);
  const magic = f.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && f.readUInt32BE(0) !== 0xa1b2c3d4 && f.readUInt32BE(0) !== 0xa1b23c4d) throw new Error(`${path}: not a pcap file`);
  const u32 = (o: number) => (le ? f.readUInt32LE(o) : f.readUInt32BE(o));
  const nano = (le ? magic : f.readUInt32BE(0)) === 0xa1b23c4d;
  const linkType = u32(20);
  const linkLen = linkType === 1 ? 14 : linkType === 113 ? 16 : -1;
  if (linkLen < 0) throw new Error(`${path}: link type ${linkType} not read here`);
  const packets: SipPacket[] = [];
  for (let o = 24; o + 16 <= f.length; ) {
    const time = u32(o) + u32(o + 4) / (nano ? 1e9 : 1e6);
    const caplen = u32(o + 8);
    const frame = f.subarray(o + 16, o + 16 + caplen);
    o += 16 + caplen;
    const ip = linkLen;
    if (frame.length < ip + 28 || frame.readUInt16BE(ip - 2) !== 0x0800 || frame[ip + 9] !== 17) continue;
    if ((frame.readUInt16BE(ip + 6) & 0x3fff) !== 0) continue; // a fragment
    const udp = ip + ((frame[ip] as number) & 0x0f) * 4;
    const p = sipFields(frame.subarray(udp + 8, ip + frame.readUInt16BE(ip + 2)).toString('latin1'));
    if (!p) continue;
    const addr = (at: number) => `${frame[at]}.${frame[at + 1]}.${frame[at + 2]}.${frame[at + 3]}`;
    const macs = linkType === 1 ? { dstMac: mac(frame, 0), srcMac: mac(frame, 6) } : {};
    packets.push({ time, src: addr(ip + 12), dst: addr(ip + 16), ...p, ...macs });
  }
  return packets;
}

const mac = (frame: Buffer, at: number) => [...frame.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');

/** A SIP message's start line, Call-ID and CSeq (long or compact forms); null if it is not one. */
function sipFields(text: string): Omit<SipPacket, 'time' | 'src' | 'dst' | 'srcMac' | 'dstMac'> | null {
  const end = text.indexOf('\r\n\r\n');
  const lines = (end < 0 ? text : text.slice(0, end)).split('\r\n');
  const start = lines[0] ?? '';
  const status = /^SIP\/2\.0 (\d{3}) /.exec(start);
  if (!status && !/^[A-Z]+ \S+ SIP\/2\.0$/.test(start)) return null;
  let callId = '';
  let cseq = '';
  let method = '';
  let branch: string | undefined;
  let hasRoute = false;
  for (const line of lines.slice(1)) {
    const m = /^([A-Za-z-]+)\s*:\s*(.*)$/.exec(line);
    if (!m) continue;
    const name = (m[1] as string).toLowerCase();
    if (name === 'call-id' || name === 'i') callId = (m[2] as string).trim();
    else if (name === 'cseq') [cseq = '', method = ''] = (m[2] as string).trim().split(/\s+/);
    else if ((name === 'via' || name === 'v') && branch === undefined)
      branch = /;branch=([^;,\s]+)/.exec(m[2] as string)?.[1] ?? '';
    else if (name === 'route') hasRoute = true;
  }
  return { callId, cseq, method, status: status ? Number(status[1]) : 0, branch, hasRoute };
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

/**
 * Calls `uac` started (it sent their INVITE) that it never saw end (no 200 to its BYE):
 * each call's packets, in wire order. `extra` merges in another host's view of the same
 * calls (e.g. the called party's capture), for the story on both sides.
 */
export function unfinishedCalls(packets: SipPacket[], uac: string, extra: SipPacket[] = []): Map<string, SipPacket[]> {
  const started = new Set<string>();
  const ended = new Set<string>();
  for (const p of packets) {
    if (p.src === uac && p.status === 0 && p.method === 'INVITE') started.add(p.callId);
    if (p.dst === uac && p.status === 200 && p.method === 'BYE') ended.add(p.callId);
  }
  const out = new Map<string, SipPacket[]>();
  for (const p of [...packets, ...extra]) {
    if (!started.has(p.callId) || ended.has(p.callId)) continue;
    const call = out.get(p.callId) ?? [];
    call.push(p);
    out.set(p.callId, call);
  }
  for (const call of out.values()) call.sort((x, y) => x.time - y.time);
  return out;
}
