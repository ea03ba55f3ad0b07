import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FlowSuccessors } from '../../sidecar/src/ha/flow-successors.ts';

const reg = (src: string) => Buffer.from(`REGISTER sip:x SIP/2.0\r\nX-Sipha-Src: ${src}\r\nVia: SIP/2.0/TLS a\r\n\r\n`);
const outbound = (uri: string, instance = 'urn:uuid:1') => [{ uri, asked: 600, instance, regId: '1' }];

describe('flow successors (a reconnected client gets its dialogs on its new flow)', () => {
  it('an RFC 5626 client: the old flow and its contact lead to the newest flow, over the same transport only', () => {
    const s = new FlowSuccessors(100);
    s.accepted(reg('tls:198.18.0.10:40000'), 'sip:alice@v', outbound('sip:alice@198.18.0.10:40000;transport=tls'));
    assert.equal(s.successor('tls', '198.18.0.10', 40000), null, 'its own newest flow has no successor');
    s.accepted(reg('tls:198.18.0.10:40002'), 'sip:alice@v', outbound('sip:alice@198.18.0.10:40002;transport=tls'));
    assert.deepEqual(s.successor('tls', '198.18.0.10', 40000), { transport: 'tls', host: '198.18.0.10', port: 40002 });
    assert.equal(s.successor('tcp', '198.18.0.10', 40000), null, 'never TCP for a TLS flow');
    assert.equal(s.successor('tls', '198.18.0.11', 40000), null, 'an unknown flow has none');
  });

  it('another AOR claiming the same instance id takes nothing', () => {
    const s = new FlowSuccessors(100);
    s.accepted(reg('tcp:198.18.0.10:40000'), 'sip:alice@v', outbound('sip:alice@198.18.0.10:40000;transport=tcp'));
    s.accepted(reg('tcp:198.18.0.66:50000'), 'sip:mallory@v', outbound('sip:m@198.18.0.66:50000;transport=tcp'));
    assert.equal(s.successor('tcp', '198.18.0.10', 40000), null);
  });

  it('without outbound: the same AOR from the same address (Contact = its connection); a removal moves nothing; UDP is ignored', () => {
    const s = new FlowSuccessors(100);
    const self = (port: number, asked = 600) => [{ uri: `sip:bob@198.18.0.10:${port};transport=tcp`, asked }];
    s.accepted(reg('tcp:198.18.0.10:40000'), 'sip:bob@v', self(40000));
    s.accepted(reg('tcp:198.18.0.10:40001'), 'sip:bob@v', self(40001, 0));
    assert.equal(s.successor('tcp', '198.18.0.10', 40000), null, 'a removal is no new flow');
    s.accepted(reg('tcp:198.18.0.10:40003'), 'sip:bob@v', self(40003));
    assert.deepEqual(s.successor('tcp', '198.18.0.10', 40000), { transport: 'tcp', host: '198.18.0.10', port: 40003 });
    assert.equal(s.successor('tcp', '198.18.0.10', 5060), null, 'only flows a REGISTER came on');
    s.accepted(reg('udp:198.18.0.10:5060'), 'sip:bob@v', [{ uri: 'sip:bob@198.18.0.10:5060', asked: 600 }]);
    assert.equal(s.size, 1);
  });

  it('without outbound, two phones of one AOR behind one address with their own Contacts stay apart', () => {
    const s = new FlowSuccessors(100);
    s.accepted(reg('tcp:198.18.0.10:40000'), 'sip:bob@v', [{ uri: 'sip:bob@192.168.1.10:5060;transport=tcp', asked: 600 }]);
    s.accepted(reg('tcp:198.18.0.10:40001'), 'sip:bob@v', [{ uri: 'sip:bob@192.168.1.11:5060;transport=tcp', asked: 600 }]);
    assert.equal(s.successor('tcp', '198.18.0.10', 40000), null, "the desk phone's flow is not the softphone's");
    s.accepted(reg('tcp:198.18.0.10:40005'), 'sip:bob@v', [{ uri: 'sip:bob@192.168.1.10:5060;transport=tcp', asked: 600 }]);
    assert.deepEqual(s.successor('tcp', '198.18.0.10', 40000), { transport: 'tcp', host: '198.18.0.10', port: 40005 });
  });

  it('is bounded: the least recently registered client goes first', () => {
    const s = new FlowSuccessors(2);
    for (let i = 0; i < 5; i++)
      s.accepted(reg(`tcp:198.18.0.10:${40000 + i}`), `sip:u${i}@v`, outbound(`sip:u@198.18.0.10:${40000 + i}`, `urn:uuid:${i}`));
    assert.equal(s.size, 2);
  });

  it("a Contact naming another address takes nothing there: not a trunk, not another user's flow (review finding)", () => {
    const s = new FlowSuccessors(100);
    // alice's flow, then mallory registers (accepted as mallory) with Contacts naming alice's flow and a trunk.
    s.accepted(
      reg('tls:198.51.100.1:40000'),
      'sip:alice@v',
      outbound('sip:alice@198.51.100.1:40000;transport=tls', 'urn:uuid:a'),
    );
    for (const uri of ['sips:m@192.0.2.50:5061', 'sip:m@198.51.100.1:40000;transport=tls'])
      s.accepted(reg('tls:203.0.113.66:50000'), 'sip:mallory@v', outbound(uri, 'urn:uuid:m'));
    s.accepted(reg('tls:203.0.113.66:50001'), 'sip:mallory@v', outbound('sips:m@192.0.2.50:5061', 'urn:uuid:m'));
    assert.equal(s.successor('tls', '192.0.2.50', 5061), null, "the trunk is nobody's flow");
    assert.equal(s.successor('tls', '198.51.100.1', 40000), null, "alice's flow stays alice's");
  });

  it("phones behind NATs with the same private Contact do not get each other's requests", () => {
    const s = new FlowSuccessors(100);
    const lan = 'sip:x@192.168.1.100:5060;transport=tcp';
    s.accepted(reg('tcp:198.51.100.1:40000'), 'sip:alice@v', [{ uri: lan.replace('x', 'alice'), asked: 600 }]);
    s.accepted(reg('tcp:198.51.100.2:41000'), 'sip:carol@v', [{ uri: lan.replace('x', 'carol'), asked: 600 }]);
    assert.equal(s.successor('tcp', '192.168.1.100', 5060), null, 'a private address is not a flow of ours');
  });

  it('names the AOR that registered the Contact a request goes to, and its latest client', () => {
    const s = new FlowSuccessors(100);
    const at = (port: number) => ({ transport: 'tls' as const, host: '198.18.0.10', port });
    s.accepted(
      reg('tls:198.18.0.10:40000'),
      'sip:alice@v',
      outbound('sip:alice@198.18.0.10:40000;transport=tls;ob', 'urn:uuid:a'),
    );
    s.accepted(reg('tls:198.18.0.10:40008'), 'sip:bob@v', outbound('sip:bob@198.18.0.10:40008;transport=tls;ob', 'urn:uuid:b'));
    const alice = s.ownerOf('sip:alice@198.18.0.10:40000;transport=tls', at(40000));
    assert.equal(alice?.aor, 'sip:alice@v', "alice's dialog Contact, parameters aside");
    assert.equal(s.ownerOf('sip:bob@198.18.0.10:40008;transport=tls', at(40008))?.aor, 'sip:bob@v');
    assert.equal(
      s.ownerOf('sip:alice@198.18.0.10:40000;transport=tls', at(5061)),
      undefined,
      'sent to a proxy on the way: not judged',
    );
    assert.equal(s.ownerOf('sip:bob@198.18.0.10:40000;transport=tls', at(40000)), undefined, 'nobody registered that user there');
    assert.equal(s.ownerOf('sip:alice@198.18.0.10:40000', { ...at(40000), transport: 'tcp' }), undefined, 'UDP: no flow');
    // bob reconnects from alice's old port: the address is his now, alice's Contact still hers.
    s.accepted(reg('tls:198.18.0.10:40000'), 'sip:bob@v', outbound('sip:bob@198.18.0.10:40000;transport=tls;ob', 'urn:uuid:b'));
    assert.deepEqual(s.ownerOf('sip:alice@198.18.0.10:40000;transport=tls', at(40000)), alice);
    s.accepted(
      reg('tls:198.18.0.10:40016'),
      'sip:alice@v',
      outbound('sip:alice@198.18.0.10:40016;transport=tls;ob', 'urn:uuid:a'),
    );
    assert.deepEqual(s.newestOf((alice as { id: string }).id), at(40016));
  });

  it('a client giving its stale Contact from a new connection stays its owner; two AORs behind one Contact name nobody; no user part names nobody', () => {
    const s = new FlowSuccessors(100);
    const at = { transport: 'tcp' as const, host: '192.168.1.10', port: 5060 };
    const lan = 'sip:bob@192.168.1.10:5060;transport=tcp';
    s.accepted(reg('tcp:198.51.100.1:40000'), 'sip:bob@v', [{ uri: lan, asked: 600 }]);
    s.accepted(reg('tcp:198.51.100.1:40002'), 'sip:bob@v', [{ uri: lan, asked: 600 }]);
    assert.equal(s.ownerOf(lan, at)?.aor, 'sip:bob@v', 'one AOR: still its');
    s.accepted(reg('tcp:198.51.100.2:40000'), 'sip:carol@v', [{ uri: lan, asked: 600 }]);
    assert.equal(s.ownerOf(lan, at), undefined, 'two AORs: nobody can tell');
    s.accepted(reg('tcp:198.51.100.3:40000'), 'sip:trunk@v', [{ uri: 'sip:198.51.100.3:40000;transport=tcp', asked: 600 }]);
    assert.equal(s.ownerOf('sip:198.51.100.3:40000;transport=tcp', { ...at, host: '198.51.100.3', port: 40000 }), undefined);
  });
});
