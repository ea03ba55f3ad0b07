/**
 * A real softphone (baresip) through a host crash of the master. A phone
 * follows the Record-Route set exactly, transport included, and keeps its
 * connections (FIELD-NOTES): a UDP phone told `transport=tcp` sends its ACK and
 * BYE over a TCP connection that dies with the old master. What Kamailio
 * records must be the client's own transport (decision 0002).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { type Baresip, startBaresip } from '../lib/baresip.ts';
import { type Capture, countPackets, readSip, type SipPacket, startCapture } from '../lib/capture.ts';
import { lookupAll } from '../lib/kamailio.ts';
import type { NetBed } from '../lib/netbed.ts';
import { type PairBed, pairBed, role, VIP } from '../lib/pair.ts';
import { sleep, until } from '../lib/procs.ts';
import { makeTestCa } from '../lib/tls-certs.ts';

/** Crashes the master's host: link down, then its Kamailio and sidecar killed, as failover.test.ts does. */
async function crashMaster(pb: PairBed): Promise<void> {
  pb.a.host.run('ip', ['link', 'set', 'eth0', 'down']);
  await Promise.all([pb.bed.stop(pb.a.kamailio.child, 'SIGKILL'), pb.bed.stop(pb.a.sidecar.child, 'SIGKILL')]);
  await until(() => role(pb.b) === 'master', 5000, 'b takes over after missed heartbeats');
}

/** SIP messages in a capture so far (the file may still be written: a read that fails counts as none yet). */
function sipSoFar(cap: Capture): SipPacket[] {
  try {
    return readSip(cap.path);
  } catch {
    return [];
  }
}

const requests = (packets: SipPacket[], from: string, method: string) =>
  packets.filter((p) => p.status === 0 && p.src === from && p.method === method);

describe('a UDP softphone keeps UDP for the whole dialog, through a host crash of the master', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it("the caller's ACK and BYE go over UDP, and after the takeover its BYE is answered 200 by the far end", async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const callee = await startBaresip(bed, pb.uas, { user: 'callee', registrar: VIP, transport: 'udp', answer: 'auto' });
    const caller = await startBaresip(bed, pb.client, { user: 'caller', registrar: VIP, transport: 'udp' });
    const overUdp = await startCapture(bed, pb.client, 'udp port 5060');
    const overTcp = await startCapture(bed, pb.client, 'tcp port 5060');

    await establish(caller, callee);
    await sleep(1000); // an established, quiet call: nothing in flight at the crash
    await crashMaster(pb);
    await sleep(500);
    const mark = callee.events.length;
    await caller.hangup();
    // The BYE reached the far end through the new master...
    await callee.waitEvent('CALL_CLOSED', 10000, mark).catch((err: Error) => {
      throw new Error(`${err.message}\nSIP at the caller: ${wire(overUdp, overTcp)}\ncaller events: ${seen(caller)}`);
    });
    // ...and its 200 came back to the caller.
    await until(
      () => sipSoFar(overUdp).some((p) => p.method === 'BYE' && p.status === 200 && p.dst === pb.client.ip),
      10000,
      "the caller's BYE answered 200 over UDP",
    );
    const udp = readSip(await overUdp.stop());
    const tcp = readSip(await overTcp.stop());
    assert.ok(requests(udp, pb.client.ip, 'ACK').length >= 1, 'the ACK went over UDP');
    assert.ok(requests(udp, pb.client.ip, 'BYE').length >= 1, 'the BYE went over UDP');
    assert.deepEqual(
      tcp.map((p) => `${p.method} ${p.status}`),
      [],
      'no SIP over TCP from or to the UDP phone',
    );
    for (const p of requests(udp, pb.client.ip, 'BYE')) assert.equal(p.dst, VIP, 'the BYE went to the VIP');
    // The mechanism: one Record-Route entry, the VIP with the client's own transport (UDP: none named).
    const rr = recordRoutes(overUdp.path, pb.client.ip);
    assert.equal(rr.length, 1, rr.join(' | '));
    assert.match(rr[0] as string, new RegExp(`^<sip:${VIP.replaceAll('.', '\\.')}:5060;ftag=[^;>]+;lr>$`));
  });
});

describe('a TCP softphone through a host crash of the master', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('keeps TCP for its ACK and BYE; the new master resets the dead connection at takeover, so the BYE goes on a new one and is answered 200', async () => {
    const pb = await pairBed();
    bed = pb.bed;
    const callee = await startBaresip(bed, pb.uas, { user: 'callee', registrar: VIP, transport: 'udp', answer: 'auto' });
    const caller = await startBaresip(bed, pb.client, { user: 'caller', registrar: VIP, transport: 'tcp' });
    const overUdp = await startCapture(bed, pb.client, 'udp port 5060');
    const overTcp = await startCapture(bed, pb.client, 'tcp port 5060');
    const resets = await startCapture(bed, pb.client, `tcp port 5060 and src host ${VIP} and tcp[tcpflags] & tcp-rst != 0`);

    await establish(caller, callee);
    await sleep(1000); // an established, quiet call: nothing in flight at the crash
    await crashMaster(pb);
    const fresh = await startCapture(bed, pb.client, `tcp port 5060 and tcp[tcpflags] & tcp-syn != 0 and dst host ${VIP}`);
    // The phone sends nothing yet: the new master tells it that its connection died with the old one
    // (a tickle ACK from the VIP, the phone's answer, the new master's kernel's reset).
    await until(() => countPackets(resets.path) >= 1, 3000, 'the new master resets the dead connection before the phone uses it');
    const mark = callee.events.length;
    await caller.hangup();
    await callee.waitEvent('CALL_CLOSED', 10000, mark).catch((err: Error) => {
      throw new Error(`${err.message}\nSIP at the caller: ${wire(overUdp, overTcp)}\ncaller events: ${seen(caller)}`);
    });
    const byeAnswered = () => sipSoFar(overTcp).some((p) => p.method === 'BYE' && p.status === 200 && p.dst === pb.client.ip);
    await until(byeAnswered, 5000, 'the BYE is answered 200 to the caller');
    assert.ok(countPackets(fresh.path) >= 1, 'the BYE went on a new TCP connection to the VIP');
    const tcp = readSip(await overTcp.stop());
    assert.equal(readSip(await overUdp.stop()).length, 0, 'no SIP over UDP from or to the TCP phone');
    // Two Record-Route entries: the callee's side (UDP), the caller's (TCP); r2=on: loose_route takes both.
    const rr = recordRoutes(overTcp.path, pb.client.ip);
    assert.equal(rr.length, 2, rr.join(' | '));
    assert.match(rr[0] as string, new RegExp(`^<sip:${VIP.replaceAll('.', '\\.')}:5060;r2=on;ftag=[^;>]+;lr>$`));
    assert.match(rr[1] as string, new RegExp(`^<sip:${VIP.replaceAll('.', '\\.')}:5060;transport=tcp;r2=on;ftag=[^;>]+;lr>$`));
    assert.ok(requests(tcp, pb.client.ip, 'ACK').length >= 1, 'the ACK went over TCP');
    assert.equal(requests(tcp, pb.client.ip, 'BYE').length, 1, 'one BYE, over TCP');
    await fresh.stop();
    await resets.stop();
  });
});

describe('a TLS softphone (baresip over TLS) through a host crash of the master', { timeout: 180_000 }, () => {
  let bed: NetBed | undefined;
  after(async () => {
    await bed?.destroy();
  });

  it('registers and calls over TLS; after the takeover its BYE goes on a new TLS connection and is answered 200', async () => {
    const ca = makeTestCa(`/tmp/sipha-softphone-tls-${process.pid}`);
    const server = ca.issue('server', [VIP]);
    const pb = await pairBed({ SIPHA_TLS_DIR: server.dir });
    bed = pb.bed;
    const callee = await startBaresip(bed, pb.uas, { user: 'callee', registrar: VIP, transport: 'udp', answer: 'auto' });
    const caller = await startBaresip(bed, pb.client, { user: 'caller', registrar: VIP, transport: 'tls', caFile: ca.certFile });
    const handshakes = await startCapture(bed, pb.client, `tcp port 5061 and tcp[tcpflags] & tcp-syn != 0 and dst host ${VIP}`);
    assert.equal(lookupAll(pb.a.kamailio, ['caller']).get('caller')?.received.endsWith(';transport=tls'), true);
    await establish(caller, callee);
    await sleep(1000);
    await crashMaster(pb);
    await sleep(1500); // the tickle has told the phone its connection is gone
    const mark = callee.events.length;
    await caller.hangup();
    await callee.waitEvent('CALL_CLOSED', 10000, mark).catch((err: Error) => {
      throw new Error(`${err.message}\ncaller events: ${seen(caller)}\n${pb.b.sidecar.output().slice(-2000)}`);
    });
    // The phone's first connection was opened before the capture (at registration): this is a new one.
    assert.ok(countPackets(await handshakes.stop()) >= 1, 'a new TLS connection to the VIP carried the BYE');
    await caller.stop();
    await callee.stop();
  });
});

/** Record-Route entries of the first 200 to an INVITE that reached `to`, in header order. */
function recordRoutes(pcap: string, to: string): string[] {
  const out = execFileSync(
    'tshark',
    [
      '-r',
      pcap,
      '-n',
      '-Y',
      `sip.Status-Code == 200 && sip.CSeq.method == "INVITE" && ip.dst == ${to}`,
      '-T',
      'fields',
      '-e',
      'sip.Record-Route',
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const first = out.split('\n').find((l) => l !== '');
  if (first === undefined) throw new Error(`no 200 to an INVITE for ${to} in ${pcap}`);
  // One TCP segment may carry the 180 and the 200 (same route set): tshark lists both messages' entries.
  return [...new Set(first.split(','))];
}

/** Who sent what over which transport, for failure messages. */
function wire(overUdp: Capture, overTcp: Capture): string {
  const line = (proto: string, p: SipPacket) => `${proto} ${p.src}->${p.dst} ${p.status || p.method} (${p.cseq} ${p.method})`;
  return [...sipSoFar(overUdp).map((p) => line('udp', p)), ...sipSoFar(overTcp).map((p) => line('tcp', p))].join('; ');
}

const seen = (phone: Baresip) => phone.events.map((e) => `${e.type}${e.param ? ` (${e.param})` : ''}`).join(', ');

/** Caller dials callee through the VIP; both see the call established. */
async function establish(caller: Baresip, callee: Baresip): Promise<void> {
  const from = { caller: caller.events.length, callee: callee.events.length };
  await caller.dial(`sip:callee@${VIP}`);
  await Promise.all([
    caller.waitEvent('CALL_ESTABLISHED', 10000, from.caller),
    callee.waitEvent('CALL_ESTABLISHED', 10000, from.callee),
  ]);
}
