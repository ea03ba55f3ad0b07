import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Hdr } from '../../sidecar/src/sip/headers.ts';
import { SipMessage } from '../../sidecar/src/sip/message.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';
import { VECTORS } from '../vectors/rfc4475.ts';

describe('RFC 4475 torture vectors', () => {
  for (const v of VECTORS) {
    it(`${v.name} (${v.section}) is ${v.valid ? 'accepted' : `rejected: ${v.reason}`}`, () => {
      const r = parseMessage(v.bytes);
      if (v.valid) {
        assert.ok(r.ok, r.ok ? '' : `${r.reason}: ${r.detail}`);
      } else {
        assert.equal(r.ok, false);
        assert.equal(r.ok ? undefined : r.reason, v.reason);
      }
    });
  }
});

const REGISTER = [
  'REGISTER sip:198.18.0.1 SIP/2.0',
  'Via: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1;rport',
  'v: SIP/2.0/TCP 10.1.1.1;branch=z9hG4bK-0',
  'f: <sip:alice@198.18.0.1>;tag=a1',
  't: <sip:alice@198.18.0.1>',
  'i: reg-1@198.18.0.10',
  'CSeq: 7 REGISTER',
  'm: <sip:alice@198.18.0.10:5060>;expires=3600',
  'l: 0',
  '',
  '',
].join('\r\n');

describe('scanner', () => {
  it('reads the start line, compact headers, top Via and CSeq without copying', () => {
    const buf = Buffer.from(REGISTER);
    const m = parseMessage(buf);
    assert.ok(m instanceof SipMessage);
    assert.equal(m.isRequest, true);
    assert.equal(m.method, 'REGISTER');
    assert.equal(m.requestUri, 'sip:198.18.0.1');
    assert.equal(m.cseq, 7);
    assert.equal(m.callId, 'reg-1@198.18.0.10');
    assert.equal(m.header(Hdr.Contact), '<sip:alice@198.18.0.10:5060>;expires=3600');
    assert.equal(m.topVia.transport, 'UDP');
    assert.equal(m.topVia.host, '198.18.0.10');
    assert.equal(m.topVia.port, 5060);
    assert.equal(m.topVia.branch, 'z9hG4bK-1');
    assert.equal(m.topVia.hasRport, true);
    assert.equal(m.topVia.rport, 0);
    assert.equal(m.buf.buffer, buf.buffer, 'the message is a view of the input');
    assert.equal(m.bodyLength, 0);
  });

  it('reads a response status, received and rport', () => {
    const m = parseMessage(
      Buffer.from(
        'SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1;received=198.18.0.99;rport=40000\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n',
      ),
    );
    assert.ok(m.ok);
    assert.equal(m.status, 200);
    assert.equal(m.method, 'REGISTER');
    assert.equal(m.topVia.received, '198.18.0.99');
    assert.equal(m.topVia.rport, 40000);
  });

  it('takes the body as the rest of a datagram without Content-Length, and cuts at Content-Length', () => {
    const head =
      'MESSAGE sip:b@c SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\n';
    const a = parseMessage(Buffer.from(`${head}\r\nhello`));
    assert.ok(a.ok);
    assert.equal(a.hasContentLength, false);
    assert.equal(a.buf.subarray(a.bodyStart).toString(), 'hello');
    const b = parseMessage(Buffer.from(`${head}Content-Length: 3\r\n\r\nhello`));
    assert.ok(b.ok);
    assert.equal(b.buf.subarray(b.bodyStart).toString(), 'hel');
  });

  it('refuses what is over the size limit, requires Content-Length on streams, ignores leading CRLFs', () => {
    const r1 = parseMessage(Buffer.alloc(70000, 0x41));
    assert.equal(r1.ok ? '' : r1.reason, 'too-large');
    const r2 = parseMessage(Buffer.from(REGISTER.replace('l: 0\r\n', '')), { requireContentLength: true });
    assert.equal(r2.ok ? '' : r2.reason, 'content-length');
    const r3 = parseMessage(Buffer.from(`\r\n\r\n${REGISTER}`));
    assert.ok(r3.ok);
    assert.equal(r3.method, 'REGISTER');
    const r4 = parseMessage(Buffer.from('\r\n\r\n'));
    assert.equal(r4.ok ? '' : r4.reason, 'empty');
  });

  it('refuses a request line with LWS inside the URI or a bad version, and an unknown header with no colon', () => {
    const bad = (s: string) => {
      const r = parseMessage(Buffer.from(s));
      return r.ok ? 'accepted' : r.reason;
    };
    assert.equal(bad(REGISTER.replace('SIP/2.0\r\n', 'SIP/3.0\r\n')), 'version');
    assert.equal(bad(REGISTER.replace('CSeq: 7', 'NoColonHere\r\nCSeq: 7')), 'header-syntax');
    assert.equal(bad(REGISTER.replace('CSeq: 7 REGISTER', 'CSeq: 7 INVITE')), 'cseq');
    assert.equal(bad(REGISTER.replace('i: reg-1@198.18.0.10\r\n', '')), 'missing-header');
  });
});
