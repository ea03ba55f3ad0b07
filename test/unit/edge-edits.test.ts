import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { replyDestination, TLS_UNSUPPORTED, TRANSPORT_UNSUPPORTED, uriDestination } from '../../sidecar/src/proxy/destination.ts';
import { toServer } from '../../sidecar/src/proxy/edge-proxy.ts';
import { ExpiringMap } from '../../sidecar/src/proxy/expiring-map.ts';
import { applyEdits } from '../../sidecar/src/sip/edit.ts';
import { parseMessage } from '../../sidecar/src/sip/scanner.ts';

const OPTIONS =
  'OPTIONS sip:198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1\r\nX-Sipha-Src: udp:6.6.6.6:1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:198.18.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n';

function parse(s: string) {
  const m = parseMessage(Buffer.from(s));
  assert.ok(m.ok);
  return m;
}

describe('edge proxy edits', () => {
  it('stamps the source first, drops a client-supplied X-Sipha-Src, adds Content-Length for the stream', () => {
    const out = Buffer.concat(toServer(parse(OPTIONS), { transport: 'udp', address: '198.18.0.10', port: 5060 })).toString();
    assert.equal(
      out,
      'OPTIONS sip:198.18.0.1 SIP/2.0\r\nX-Sipha-Src: udp:198.18.0.10:5060\r\nVia: SIP/2.0/UDP 198.18.0.10:5060;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:198.18.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n',
    );
    // And the result is itself a well-formed stream message.
    assert.ok(parseMessage(Buffer.from(out), { requireContentLength: true }).ok);
  });

  it('leaves untouched bytes untouched: no edits give back the very same buffer', () => {
    const m = parse(OPTIONS);
    const slices = applyEdits(m, []);
    assert.equal(slices.length, 1);
    assert.equal(slices[0], m.buf);
  });

  const v = (via: string) =>
    parse(`SIP/2.0 200 OK\r\nVia: ${via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n`)
      .topVia;

  it('routes replies by received/rport, else by sent-by (RFC 3261 18.2.2, RFC 3581)', () => {
    assert.deepEqual(replyDestination(v('SIP/2.0/UDP 1.2.3.4:5062;branch=z9hG4bK1')), {
      transport: 'udp',
      host: '1.2.3.4',
      port: 5062,
    });
    assert.deepEqual(replyDestination(v('SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1;received=5.6.7.8;rport=4000')), {
      transport: 'udp',
      host: '5.6.7.8',
      port: 4000,
    });
    assert.deepEqual(replyDestination(v('SIP/2.0/TCP h.example;branch=z9hG4bK1;received=5.6.7.8')), {
      transport: 'tcp',
      host: '5.6.7.8',
      port: 5060,
    });
  });

  it('reads next-hop URIs the server names', () => {
    assert.deepEqual(uriDestination('sip:198.18.0.20:5060'), { transport: 'udp', host: '198.18.0.20', port: 5060 });
    assert.deepEqual(uriDestination('sip:u@198.18.0.20;transport=TCP'), { transport: 'tcp', host: '198.18.0.20', port: 5060 });
    assert.deepEqual(uriDestination('<sip:[2001:db8::1]:5070;lr>'), { transport: 'udp', host: '2001:db8::1', port: 5070 });
    assert.equal(typeof uriDestination('tel:+123'), 'string');
  });

  it('reads TLS next hops and replies (sips:, transport=tls, a TLS Via); refuses other transports and sips downgrades', () => {
    const tls = (host: string, port: number) => ({ transport: 'tls', host, port });
    assert.deepEqual(uriDestination('sips:x@h'), tls('h', 5061));
    assert.deepEqual(uriDestination('<sips:x@h:5071;lr>'), tls('h', 5071));
    assert.deepEqual(uriDestination('sip:x@h;transport=tls'), tls('h', 5061));
    assert.deepEqual(uriDestination('sip:x@h;transport=TLS'), tls('h', 5061));
    // RFC 5630: sips;transport=tcp is TLS over TCP; sips over UDP would be a downgrade.
    assert.deepEqual(uriDestination('sips:x@h;transport=tcp'), tls('h', 5061));
    assert.equal(uriDestination('sips:x@h;transport=udp'), TLS_UNSUPPORTED);
    for (const uri of ['sip:h;transport=wss', 'sip:h;transport=ws', 'sip:h;transport=sctp']) {
      assert.equal(uriDestination(uri), TRANSPORT_UNSUPPORTED, uri);
    }
    assert.deepEqual(replyDestination(v('SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK1;rport=40000')), tls('1.2.3.4', 40000));
    assert.deepEqual(replyDestination(v('SIP/2.0/TLS 1.2.3.4;branch=z9hG4bK1')), tls('1.2.3.4', 5061));
    for (const t of ['WSS', 'WS', 'SCTP']) {
      assert.equal(replyDestination(v(`SIP/2.0/${t} 1.2.3.4:5061;branch=z9hG4bK1`)), TRANSPORT_UNSUPPORTED, t);
    }
    assert.equal(typeof uriDestination('tel:+123'), 'string');
    assert.equal(typeof uriDestination('sip:h:99999'), 'string');
  });

  it('expiring map keeps entries for one to two periods', () => {
    const m = new ExpiringMap<string, number>(60_000);
    m.set('a', 1);
    m.rotate();
    assert.equal(m.get('a'), 1);
    m.rotate();
    assert.equal(m.get('a'), undefined);
    m.close();
  });
});

describe('sidecar configuration in a cluster', () => {
  it('derives the ordinal from the pod name and the peer from the peers Service', async () => {
    const { loadConfig } = await import('../../sidecar/src/config.ts');
    const base = {
      SIPHA_REPLICATION_KEY: Buffer.alloc(32, 7).toString('base64'),
      SIPHA_NODE_ADDRESS: '198.18.0.1',
      SIPHA_VIP: '198.18.0.100',
    };
    const c = loadConfig({
      ...base,
      SIPHA_POD_NAME: 'sip-edge-1',
      SIPHA_PAIR: 'sip-edge',
      SIPHA_PEERS_SERVICE: 'sip-edge-peers',
    });
    assert.equal(c.ha?.ordinal, 1);
    assert.equal(c.ha?.peerAddress, 'sip-edge-0.sip-edge-peers');
    assert.equal(c.ha?.vipMode, 'arp');
    assert.throws(() => loadConfig({ ...base, SIPHA_PEER_ADDRESS: 'x', SIPHA_VIP_MODE: 'bgp' }), /SIPHA_VIP_MODE=bgp/);
    assert.equal(loadConfig({}).ha, null);
    assert.throws(() => loadConfig({ SIPHA_PEER_ADDRESS: '198.18.0.2' }), /SIPHA_REPLICATION_KEY is required/);
    assert.throws(
      () => loadConfig({ ...base, SIPHA_PEER_ADDRESS: 'x', SIPHA_HEARTBEAT_MISSES: '1' }),
      /SIPHA_HEARTBEAT_MISSES=1: expected an integer from 2 to 20/,
    );
  });
});
