import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { registerExpiry, StateCache } from '../../sidecar/src/ha/state-cache.ts';
import type { SipMessage } from '../../sidecar/src/sip/message.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';

const reg = (callId: string, contact: string | null, expires?: number, cseq = 1): SipMessage => {
  const m = parseMessage(
    Buffer.from(
      `REGISTER sip:198.18.0.100 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10;branch=z9hG4bK${callId}${cseq}\r\nFrom: <sip:u@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: ${callId}\r\nCSeq: ${cseq} REGISTER\r\n` +
        `${contact === null ? '' : `Contact: ${contact}\r\n`}${expires === undefined ? '' : `Expires: ${expires}\r\n`}Content-Length: 0\r\n\r\n`,
    ),
  );
  assert.ok(m.ok);
  return m;
};

describe('state cache (burst resync)', () => {
  it('reads the expiry a REGISTER asks for', () => {
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>;expires=60')), 60);
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>', 120)), 120);
    assert.equal(registerExpiry(reg('a', '<sip:u@198.18.0.10>')), 3600);
    assert.equal(registerExpiry(reg('a', '*', 0)), 0);
    assert.equal(registerExpiry(reg('a', null)), 0, 'a query (no Contact) holds no state');
  });

  it('keeps the latest REGISTER per Call-ID, drops withdrawn and expired ones, ignores other methods', () => {
    let t = 1_000_000;
    const c = new StateCache(() => t);
    const b = (m: SipMessage) => [m.buf];
    c.observe(reg('ua1', '<sip:u1@x>', 60, 1), 0, b(reg('ua1', '<sip:u1@x>', 60, 1)));
    c.observe(reg('ua1', '<sip:u1@x>', 60, 2), 1, b(reg('ua1', '<sip:u1@x>', 60, 2)));
    c.observe(reg('ua2', '<sip:u2@x>', 10), 0, b(reg('ua2', '<sip:u2@x>', 10)));
    c.observe(reg('ua3', '<sip:u3@x>', 60), 0, b(reg('ua3', '<sip:u3@x>', 60)));
    c.observe(reg('ua3', '<sip:u3@x>', 0, 2), 0, b(reg('ua3', '<sip:u3@x>', 0, 2)));
    assert.equal(c.size, 2);
    const first = [...c.burst()];
    assert.equal(first.length, 2);
    assert.match(first[0]?.bytes.toString() ?? '', /CSeq: 2 REGISTER/);
    assert.equal(first[0]?.link, 1);
    t += 11_000;
    assert.equal([...c.burst()].length, 1, 'ua2 expired');
  });
});
