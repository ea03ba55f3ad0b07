/**
 * The master's state cache (sidecar/src/ha/state-cache.ts): what a joining
 * backup is told. Only registrations the server accepted are kept, for the
 * time it granted, and the cache is bounded (issue 9 item 5).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { markReplay, registerExpiry, StateCache } from '../../sidecar/src/ha/state-cache.ts';
import type { SipMessage } from '../../sidecar/src/sip/message.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';

function parse(text: string): SipMessage {
  const m = parseMessage(Buffer.from(text, 'latin1'));
  assert.ok(m.ok);
  return m;
}

const reg = (callId: string, contact: string | null, expires?: number, cseq = 1, src = 'udp:198.18.0.10:5060'): SipMessage =>
  parse(
    `REGISTER sip:198.18.0.100 SIP/2.0\r\nX-Sipha-Src: ${src}\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK${callId}${cseq}\r\nFrom: <sip:u@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: ${callId}\r\nCSeq: ${cseq} REGISTER\r\n` +
      `${contact === null ? '' : `Contact: ${contact}\r\n`}${expires === undefined ? '' : `Expires: ${expires}\r\n`}Content-Length: 0\r\n\r\n`,
  );

/** The server's answer to a REGISTER: status, and the Contact it lists (with the granted expires). */
const answer = (callId: string, cseq: number, status: number, contact?: string): SipMessage =>
  parse(
    `SIP/2.0 ${status} X\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK${callId}${cseq}\r\nFrom: <sip:u@h>;tag=1\r\nTo: <sip:u@h>;tag=s\r\nCall-ID: ${callId}\r\nCSeq: ${cseq} REGISTER\r\n` +
      `${contact === undefined ? '' : `Contact: ${contact}\r\n`}Content-Length: 0\r\n\r\n`,
  );

/** Sends a REGISTER through the cache and answers it as the server would. */
function register(c: StateCache, m: SipMessage, status: number, granted?: string, link = 0): void {
  c.observe(m, link, [m.buf]);
  c.answer(answer(m.callId, m.cseq, status, granted));
}

describe('state cache (burst resync)', () => {
  it('reads the expiry a REGISTER asks for', () => {
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>;expires=60')), 60);
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>', 120)), 120);
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>')), 3600);
    assert.equal(registerExpiry(reg('a', '*', 0)), 0);
    assert.equal(registerExpiry(reg('a', null)), 0, 'a query (no Contact) holds no state');
  });

  it('keeps the latest accepted REGISTER per binding, replaces withdrawn ones by their removal, drops expired ones', () => {
    let t = 1_000_000;
    const c = new StateCache({ now: () => t });
    register(c, reg('ua1', '<sip:u1@x>', 60, 1), 200, '<sip:u1@x>;expires=60', 0);
    register(c, reg('ua1', '<sip:u1@x>', 60, 2), 200, '<sip:u1@x>;expires=60', 1);
    register(c, reg('ua2', '<sip:u2@x>', 10), 200, '<sip:u2@x>;expires=10');
    register(c, reg('ua3', '<sip:u3@x>', 60), 200, '<sip:u3@x>;expires=60');
    register(c, reg('ua3', '<sip:u3@x>', 0, 2), 200);
    assert.equal(c.size, 2);
    const first = [...c.burst()];
    assert.equal(first.length, 3, "ua1, ua2, and ua3's removal (replayed for a backup that missed it)");
    assert.match(first[0]?.bytes.toString() ?? '', /CSeq: 2 REGISTER/);
    assert.equal(first[0]?.link, 1);
    assert.match(first[2]?.bytes.toString() ?? '', /Call-ID: ua3\r\nCSeq: 2 REGISTER[\s\S]*Expires: 0/);
    t += 11_000;
    assert.equal([...c.burst()].length, 2, 'ua2 expired');
  });

  it('reads Contacts with quoted commas (display names, parameters) and their RFC 5626 instance (review finding)', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    const seen: string[] = [];
    c.onAccepted = (_b, _aor, contacts) => {
      for (const k of contacts) seen.push(`${k.uri} ${k.instance ?? '-'} ${k.regId ?? '-'}`);
    };
    const contact =
      '"Smith, John" <sip:js@198.18.0.10:40000;transport=tcp>;x="a,b";+sip.instance="<urn:uuid:1111>";reg-id=2, <sip:js@198.18.0.10:5060>';
    register(c, reg('q', contact, 60), 200);
    assert.deepEqual(seen, ['sip:js@198.18.0.10:40000;transport=tcp urn:uuid:1111 2', 'sip:js@198.18.0.10:5060 - -']);
  });

  it('a REGISTER the server rejected (401, 403) or never answered is not kept, and gets no keepalives', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    for (let i = 0; i < 1000; i++)
      register(c, reg(`spoof${i}`, `<sip:x${i}@x>`, 4_000_000_000, 1, `udp:203.0.113.${i % 250}:5060`), 401);
    register(c, reg('forbidden', '<sip:f@x>', 60), 403);
    c.observe(reg('silent', '<sip:s@x>', 60), 0, [reg('silent', '<sip:s@x>', 60).buf]);
    assert.equal(c.size, 0);
    assert.equal([...c.burst()].length, 0);
    assert.deepEqual(c.udpFlows(), []);
    // The challenge answered: the authenticated REGISTER (next CSeq) is accepted and kept.
    register(c, reg('spoof7', '<sip:x7@x>', 60, 2, 'udp:198.18.0.10:5060'), 200, '<sip:x7@x>;expires=60');
    assert.equal(c.size, 1);
    assert.deepEqual(c.udpFlows(), [{ address: '198.18.0.10', port: 5060 }]);
  });

  it('keeps a registration for the time the server granted, not the (huge) time the client asked', () => {
    let t = 1_000_000;
    const c = new StateCache({ now: () => t });
    register(c, reg('ua', '<sip:u@x>', 4_000_000_000), 200, '<sip:other@y>;expires=900, <sip:u@x>;expires=3600');
    t += 3_599_000;
    assert.equal([...c.burst()].length, 1);
    t += 2_000;
    assert.equal([...c.burst()].length, 0, 'gone after the granted 3600 s');
  });

  it('is bounded: past its cap new bindings are refused (counted), known ones still refresh; answers waiting are bounded too', () => {
    const c = new StateCache({ now: () => 1_000_000, maxEntries: 100, maxPending: 50 });
    for (let i = 0; i < 150; i++) register(c, reg(`ua${i}`, `<sip:u${i}@x>`, 60), 200, `<sip:u${i}@x>;expires=60`);
    assert.equal(c.size, 100);
    assert.equal(c.refused, 50);
    register(c, reg('ua3', '<sip:u3@x>', 60, 2), 200, '<sip:u3@x>;expires=60');
    assert.match([...c.burst()].find((e) => e.bytes.includes('Call-ID: ua3\r\n'))?.bytes.toString() ?? '', /CSeq: 2/);
    for (let i = 0; i < 500; i++) c.observe(reg(`p${i}`, '<sip:p@x>', 60), 0, [reg(`p${i}`, '<sip:p@x>', 60).buf]);
    assert.ok(c.pendingSize <= 50);
  });

  it('prunes expired registrations and unanswered REGISTERs by time, without a burst', () => {
    let t = 1_000_000;
    const c = new StateCache({ now: () => t });
    register(c, reg('short', '<sip:s@x>', 5), 200, '<sip:s@x>;expires=5');
    c.observe(reg('unanswered', '<sip:n@x>', 60), 0, [reg('unanswered', '<sip:n@x>', 60).buf]);
    t += 60_000;
    c.prune();
    assert.equal(c.size, 0);
    assert.equal(c.pendingSize, 0);
  });
});

describe('state cache: the burst is marked as replays (the backup does not authenticate them anew)', () => {
  it('marks the X-Sipha-Src value once, keeps the rest byte for byte, and still knows the UDP source', () => {
    const c = new StateCache();
    const m = reg('r1', '<sip:u1@x>', 60);
    register(c, m, 200, '<sip:u1@x>;expires=60');
    const [e] = [...c.burst()];
    const text = e?.bytes.toString('latin1') ?? '';
    assert.match(text, /\r\nX-Sipha-Src: udp:198\.18\.0\.10:5060;replay\r\nVia: /);
    assert.equal(text.replace(';replay', ''), m.buf.toString('latin1'), 'nothing else changed');
    assert.equal(markReplay(e?.bytes as Buffer).toString('latin1'), text, 'a replay replayed again is marked once');
    // A backup caches what it was replayed; as master it keeps alive the same client.
    const b = new StateCache();
    const replayed = parse(text);
    register(b, replayed, 200, '<sip:u1@x>;expires=60');
    assert.deepEqual(b.udpFlows(), [{ address: '198.18.0.10', port: 5060 }]);
  });
});

describe('state cache: bindings (address-of-record + contact), as the registrar keeps them', () => {
  const aorReg = (callId: string, aor: string, contact: string | null, expires: number, cseq = 1): SipMessage =>
    parse(
      `REGISTER sip:198.18.0.100 SIP/2.0\r\nX-Sipha-Src: udp:198.18.0.10:5060\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK${callId}${cseq}\r\nFrom: <sip:${aor}>;tag=1\r\nTo: <sip:${aor}>\r\nCall-ID: ${callId}\r\nCSeq: ${cseq} REGISTER\r\n` +
        `${contact === null ? '' : `Contact: ${contact}\r\n`}Expires: ${expires}\r\nContent-Length: 0\r\n\r\n`,
    );
  const burstText = (c: StateCache) => [...c.burst()].map((e) => e.bytes.toString('latin1'));

  it('a removal with the same Call-ID is replayed (a backup that missed it drops the binding), for as long as the binding could live there', () => {
    let t = 1_000_000;
    const c = new StateCache({ now: () => t });
    register(c, aorReg('ua', 'alice@h', '<sip:a@198.18.0.10>', 60), 200, '<sip:a@198.18.0.10>;expires=60');
    register(c, aorReg('ua', 'alice@h', '<sip:a@198.18.0.10>', 0, 2), 200);
    assert.equal(c.size, 0, 'no live registration');
    const b = burstText(c);
    assert.equal(b.length, 1);
    assert.match(b[0] ?? '', /CSeq: 2 REGISTER[\s\S]*Expires: 0/, 'the removal itself');
    assert.deepEqual(c.udpFlows(), [], 'no keepalives to a removed binding');
    t += 61_000;
    assert.equal(burstText(c).length, 0, 'gone once the binding it removed would have expired');
  });

  it('a removal with another Call-ID (a restarted phone) removes the binding: it is not resurrected by the burst', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    register(c, aorReg('boot1', 'alice@h', '<sip:a@198.18.0.10>', 3600), 200, '<sip:a@198.18.0.10>;expires=3600');
    register(c, aorReg('boot2', 'alice@h', '<sip:a@198.18.0.10>', 0), 200);
    const b = burstText(c);
    assert.equal(b.length, 1, b.join('\n---\n'));
    assert.match(b[0] ?? '', /Call-ID: boot2[\s\S]*Expires: 0/);
  });

  it('a query (no Contact) changes nothing; `Contact: *` removes every binding of the address-of-record, and only its', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    register(c, aorReg('ua', 'alice@h', '<sip:a1@198.18.0.10>', 3600), 200, '<sip:a1@198.18.0.10>;expires=3600');
    register(c, aorReg('ub', 'alice@h', '<sip:a2@198.18.0.11>', 3600), 200, '<sip:a2@198.18.0.11>;expires=3600');
    register(c, aorReg('uc', 'bob@h', '<sip:b@198.18.0.12>', 3600), 200, '<sip:b@198.18.0.12>;expires=3600');
    register(c, aorReg('ua', 'alice@h', null, 0, 2), 200);
    assert.equal(c.size, 3, 'a query keeps everything');
    register(c, aorReg('ua', 'alice@h', '*', 0, 3), 200);
    assert.equal(c.size, 1);
    const b = burstText(c);
    assert.equal(b.filter((x) => x.includes('Contact: *')).length, 1, 'the wildcard removal is replayed once');
    assert.equal(b.filter((x) => x.includes('Call-ID: uc')).length, 1, "bob's binding stays");
  });

  it('replays in the order things happened: a later removal comes after the REGISTER that made the binding', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    register(c, aorReg('u1', 'alice@h', '<sip:a@198.18.0.10>', 3600), 200, '<sip:a@198.18.0.10>;expires=3600');
    register(c, aorReg('u2', 'bob@h', '<sip:b@198.18.0.11>', 3600), 200, '<sip:b@198.18.0.11>;expires=3600');
    register(c, aorReg('u1', 'alice@h', '<sip:a@198.18.0.10>', 0, 2), 200);
    register(c, aorReg('u3', 'alice@h', '<sip:a@198.18.0.10>', 3600), 200, '<sip:a@198.18.0.10>;expires=3600');
    const b = burstText(c).map((x) => /Call-ID: (\S+)/.exec(x)?.[1]);
    assert.deepEqual(b, ['u2', 'u3'], 'the re-registration replaced the removal');
  });
});

describe('state cache: packed storage (issue 9: 100k registrations under 200 MiB)', () => {
  const userReg = (i: number, cseq = 1, expires = 3600): SipMessage =>
    parse(
      `REGISTER sip:198.18.0.100 SIP/2.0\r\nX-Sipha-Src: udp:198.18.0.${10 + (i % 200)}:5060\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK${i}x${cseq}\r\nFrom: <sip:u${i}@h>;tag=1\r\nTo: <sip:u${i}@h>\r\nCall-ID: c${i}\r\nCSeq: ${cseq} REGISTER\r\n` +
        `Contact: <sip:u${i}@198.18.0.10>\r\nExpires: ${expires}\r\nContent-Length: 0\r\n\r\n`,
    );
  const callIds = (c: StateCache) => [...c.burst()].map((e) => /Call-ID: (\S+)/.exec(e.bytes.toString('latin1'))?.[1]);

  it('a burst read while bindings change replays each one as it is when reached; a newer REGISTER is not mistaken for one already sent', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    for (let i = 0; i < 3; i++) register(c, userReg(i), 200, `<sip:u${i}@198.18.0.10>;expires=3600`);
    const it = c.burst();
    const first = it.next().value;
    assert.match(first?.bytes.toString('latin1') ?? '', /Call-ID: c0\r\nCSeq: 1 /);
    // u0 registers again, twice (REGISTERs that reached the server before this stream, answered
    // now): the first frees u0's message, the second takes its place in the arena.
    register(c, userReg(0, 2), 200, '<sip:u0@198.18.0.10>;expires=3600');
    register(c, userReg(0, 3), 200, '<sip:u0@198.18.0.10>;expires=3600');
    const rest = [...it].map((e) => e.bytes.toString('latin1'));
    assert.deepEqual(
      rest.map((t) => /Call-ID: (\S+)\r\nCSeq: (\d+)/.exec(t)?.slice(1).join('/')),
      ['c1/1', 'c2/1', 'c0/3'],
    );
    assert.match(first?.bytes.toString('latin1') ?? '', /Call-ID: c0\r\nCSeq: 1 /, 'a view handed out does not change');
  });

  it('bytes survive churn: refreshes, removals and expiry free space, the arena compacts, every binding still replays byte for byte', () => {
    let t = 1_000_000;
    const c = new StateCache({ now: () => t });
    const N = 5000;
    const latest = new Map<number, string>();
    for (let round = 1; round <= 8; round++) {
      for (let i = 0; i < N; i++) {
        if (round > 1 && i % 7 === round % 7) continue; // some keep an old REGISTER (holes in old chunks)
        const m = userReg(i, round, i % 11 === 0 ? 60 : 3600);
        register(c, m, 200, `<sip:u${i}@198.18.0.10>;expires=${i % 11 === 0 ? 60 : 3600}`);
        latest.set(i, m.buf.toString('latin1'));
      }
      t += 1000;
    }
    for (let i = 0; i < N; i += 13) {
      register(c, userReg(i, 100, 0), 200);
      latest.delete(i);
    }
    t += 61_000;
    c.prune();
    for (const i of [...latest.keys()]) if (i % 11 === 0) latest.delete(i);
    const { allocated, live } = c.bytes;
    assert.ok(allocated <= 2 * live + 8 * 2 ** 20 + 2 ** 20, `compacted: ${allocated} bytes held for ${live} live`);
    const replayed = new Map<number, string>();
    for (const e of c.burst()) {
      const text = e.bytes.toString('latin1').replace(';replay', '');
      const i = Number(/Call-ID: c(\d+)/.exec(text)?.[1]);
      if (/Expires: 0\r\n/.test(text)) continue; // the removals
      replayed.set(i, text);
    }
    assert.equal(replayed.size, latest.size);
    for (const [i, text] of latest) assert.equal(replayed.get(i), text, `binding ${i}`);
    assert.equal(c.size, latest.size);
  });

  it('a REGISTER for several contacts is stored once and replayed once while any of its bindings lives', () => {
    const c = new StateCache({ now: () => 1_000_000 });
    const two = parse(
      'REGISTER sip:h SIP/2.0\r\nX-Sipha-Src: udp:198.18.0.10:5060\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bKm\r\nFrom: <sip:m@h>;tag=1\r\nTo: <sip:m@h>\r\nCall-ID: multi\r\nCSeq: 1 REGISTER\r\n' +
        'Contact: <sip:m1@198.18.0.10>, <sip:m2@198.18.0.10>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n',
    );
    register(c, two, 200, '<sip:m1@198.18.0.10>;expires=3600, <sip:m2@198.18.0.10>;expires=3600');
    assert.equal(c.size, 2);
    assert.equal(c.bytes.live, two.buf.length, 'one copy for both bindings');
    assert.deepEqual(callIds(c), ['multi']);
    register(c, userReg(1), 200, '<sip:u1@198.18.0.10>;expires=3600');
    const drop = parse(
      'REGISTER sip:h SIP/2.0\r\nX-Sipha-Src: udp:198.18.0.10:5060\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bKd\r\nFrom: <sip:m@h>;tag=1\r\nTo: <sip:m@h>\r\nCall-ID: multi\r\nCSeq: 2 REGISTER\r\n' +
        'Contact: <sip:m1@198.18.0.10>;expires=0\r\nContent-Length: 0\r\n\r\n',
    );
    register(c, drop, 200);
    assert.deepEqual(callIds(c), ['multi', 'c1', 'multi'], 'm2 still by the first REGISTER, then m1 removed by the second');
  });

  it('a backup taking a burst larger than the waiting cap caches every replayed registration (its server answers late)', () => {
    const c = new StateCache({ now: () => 1_000_000, maxPending: 1000 });
    const replays = Array.from({ length: 3000 }, (_, i) => parse(markReplay(userReg(i).buf).toString('latin1')));
    for (const m of replays) c.observe(m, 0, [m.buf]); // read faster than the server answers
    for (let i = 0; i < 200; i++) c.observe(userReg(10_000 + i), 0, [userReg(10_000 + i).buf]); // live ones meanwhile
    for (let i = 0; i < 3000; i++) c.answer(answer(`c${i}`, 1, 200, `<sip:u${i}@198.18.0.10>;expires=3600`));
    assert.equal(c.size, 3000, 'every replayed registration kept');
    const live = parse(markReplay(userReg(1).buf).toString('latin1'));
    assert.equal(markReplay(live.buf), live.buf, 'marked once');
    for (let i = 0; i < 5000; i++) c.observe(userReg(20_000 + i), 0, [userReg(20_000 + i).buf]);
    assert.ok(c.pendingSize <= 1000, 'live REGISTERs are still capped');
  });
});

describe('state cache: a replay its server refuses is still kept (the master accepted it)', () => {
  it('Kamailio answers 400 to a replay of a binding it holds from an earlier replay: kept, with the expiry the answer lists', () => {
    // Seen on the netns bed (faults.test.ts, "the cluster e2e fault sequence"): a sidecar restarted beside
    // its running server is replayed the state; the server, holding each binding from an earlier burst,
    // answers 400 with the binding's contact and remaining expiry. A cache that dropped them replayed
    // nothing once this node was master: the next backup got 0 of 300, and lost them all at a takeover.
    const c = new StateCache({ now: () => 1_000_000 });
    const m = parse(markReplay(reg('k1', '<sip:u@198.18.0.10:5060>', 3600).buf).toString('latin1'));
    c.observe(m, 0, [m.buf]);
    c.answer(answer('k1', 1, 400, '<sip:u@198.18.0.10:5060>;expires=3574;received="sip:198.18.0.10:5060"'));
    assert.equal(c.size, 1);
    const [e] = [...c.burst()];
    assert.ok(e?.bytes.includes(Buffer.from('Call-ID: k1')));
    // A live REGISTER the server refuses is still not kept (issue 9 item 5).
    register(c, reg('k2', '<sip:v@198.18.0.10:5060>', 3600), 400);
    assert.equal(c.size, 1);
  });
});
