/**
 * The pcap reader the soak uses for its call captures (readSipUdp) gives what
 * tshark's SIP dissector gives (readSip) for the same file: it replaced
 * tshark there because tshark took over 6 minutes on a 300 MB capture.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readSip, readSipUdp, unfinishedCalls } from '../lib/capture.ts';

const dir = mkdtempSync(join(tmpdir(), 'sipha-capture-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const ip4 = (a: string) => Buffer.from(a.split('.').map(Number));

/** One Ethernet frame: IPv4 carrying `proto` (17 UDP, 6 TCP) with `payload` behind its header. */
function frame(src: string, dst: string, proto: 17 | 6, payload: Buffer, flagsFrag = 0): Buffer {
  const l4 =
    proto === 17
      ? Buffer.concat([Buffer.from([0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 0]), payload])
      : Buffer.concat([
          Buffer.from([0x13, 0xc4, 0x13, 0xc4, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]),
          payload,
        ]);
  if (proto === 17) l4.writeUInt16BE(l4.length, 4);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt16BE(flagsFrag, 6);
  ip[8] = 64;
  ip[9] = proto;
  ip4(src).copy(ip, 12);
  ip4(dst).copy(ip, 16);
  // Destination MAC 02:00:00:00:00:01, source 02:00:00:00:00:02, then IPv4.
  const eth = Buffer.from([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
  return Buffer.concat([eth, ip, l4]);
}

function pcap(frames: Array<{ t: number; f: Buffer }>): string {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(65535, 16);
  head.writeUInt32LE(1, 20);
  const records = frames.map(({ t, f }) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(Math.floor(t), 0);
    r.writeUInt32LE(Math.round((t % 1) * 1e6), 4);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    return Buffer.concat([r, f]);
  });
  const path = join(dir, `t-${frames.length}.pcap`);
  writeFileSync(path, Buffer.concat([head, ...records]));
  return path;
}

const sip = (text: string) => Buffer.from(`${text.split('\n').join('\r\n')}\r\n\r\n`, 'latin1');
const invite = sip(`INVITE sip:uas@198.18.0.100:5060 SIP/2.0
Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1
From: <sip:caller@198.18.0.100>;tag=1
To: <sip:uas@198.18.0.100>
Call-ID: 1-2@198.18.0.10
CSeq: 1 INVITE
Content-Length: 0`);
const ok = sip(`SIP/2.0 200 OK
Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1
f: <sip:caller@198.18.0.100>;tag=1
t: <sip:uas@198.18.0.100>;tag=9
i: 1-2@198.18.0.10
CSeq:   2   INVITE
l: 0`);
const bye = sip(`BYE sip:uas@198.18.0.20:5060 SIP/2.0
Route: <sip:198.18.0.100;lr>
Call-ID: 3-4@198.18.0.10
CSeq: 3 BYE
Content-Length: 0`);

describe('readSipUdp: the soak capture reader', () => {
  it('reads what tshark reads, request and response, long and compact headers, and skips the rest', () => {
    const path = pcap([
      { t: 1796033341.125, f: frame('198.18.0.10', '198.18.0.100', 17, invite) },
      { t: 1796033341.25, f: frame('198.18.0.100', '198.18.0.10', 17, ok) },
      { t: 1796033341.5, f: frame('198.18.0.10', '198.18.0.100', 17, Buffer.from('not SIP at all')) },
      { t: 1796033341.75, f: frame('198.18.0.10', '198.18.0.100', 17, bye, 0x2000 | 10) }, // a fragment
      { t: 1796033342, f: frame('198.18.0.10', '198.18.0.20', 17, bye) },
    ]);
    const ours = readSipUdp(path);
    assert.deepEqual(
      ours.map((p) => [p.src, p.dst, p.callId, p.cseq, p.method, p.status]),
      [
        ['198.18.0.10', '198.18.0.100', '1-2@198.18.0.10', '1', 'INVITE', 0],
        ['198.18.0.100', '198.18.0.10', '1-2@198.18.0.10', '2', 'INVITE', 200],
        ['198.18.0.10', '198.18.0.20', '3-4@198.18.0.10', '3', 'BYE', 0],
      ],
    );
    // The frame's MACs: which host a packet to the VIP really went to.
    assert.deepEqual(
      ours.map((p) => [p.dstMac, p.srcMac]),
      Array(3).fill(['02:00:00:00:00:01', '02:00:00:00:00:02']),
    );
    // The top Via's branch and whether a request carries a Route (a lost Route makes a 404).
    assert.deepEqual(
      ours.map((p) => [p.branch, p.hasRoute]),
      [
        ['z9hG4bK-1', false],
        ['z9hG4bK-1', false],
        [undefined, true],
      ],
    );
    // tshark's dissector, on the same file (the fragment is not a SIP message to it either).
    const theirs = readSip(path).filter((p) => p.callId !== '');
    assert.deepEqual(
      ours.map(({ srcMac: _s, dstMac: _d, branch: _b, hasRoute: _r, ...p }) => ({ ...p, time: Math.round(p.time * 1e6) })),
      theirs.map((p) => ({ ...p, time: Math.round(p.time * 1e6) })),
    );
  });

  it('refuses a file that is not a pcap', () => {
    const path = join(dir, 'bad.pcap');
    writeFileSync(path, Buffer.alloc(64));
    assert.throws(() => readSipUdp(path), /not a pcap file/);
  });
});

describe('unfinishedCalls', () => {
  it('keeps the calls the caller started and never saw end, with the called party packets merged in order', () => {
    const p = (time: number, src: string, dst: string, callId: string, cseq: string, method: string, status = 0) => ({
      time,
      src,
      dst,
      callId,
      cseq,
      method,
      status,
    });
    const uac = '198.18.0.10';
    const vip = '198.18.0.100';
    const client = [
      p(1, uac, vip, 'done', '1', 'INVITE'),
      p(2, uac, vip, 'done', '3', 'BYE'),
      p(3, vip, uac, 'done', '3', 'BYE', 200),
      p(4, uac, vip, 'stuck', '1', 'INVITE'),
      p(6, vip, uac, 'stuck', '1', 'INVITE', 200),
      p(7, vip, uac, 'not-ours', '1', 'INVITE', 200),
    ];
    const uas = [p(5, vip, '198.18.0.20', 'stuck', '1', 'INVITE'), p(5.5, vip, '198.18.0.20', 'done', '1', 'INVITE')];
    const calls = unfinishedCalls(client, uac, uas);
    assert.deepEqual([...calls.keys()], ['stuck']);
    assert.deepEqual(
      calls.get('stuck')?.map((x) => x.time),
      [4, 5, 6],
    );
  });
});
