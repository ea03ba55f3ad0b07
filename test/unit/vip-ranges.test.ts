/**
 * Allowed VIP ranges (operator/src/vip-ranges.ts, issue 9 item 11): the
 * installer says which addresses a SipHaPair may announce; anything else is
 * refused, so whoever may create a pair cannot take a node's or the gateway's
 * address by gratuitous ARP.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseVipRanges, vipAllowed } from '../../operator/src/vip-ranges.ts';

describe('allowed VIP ranges', () => {
  it('parses a comma-separated list of IPv4 CIDRs; empty means unrestricted', () => {
    assert.deepEqual(parseVipRanges(''), null);
    assert.deepEqual(parseVipRanges(undefined), null);
    assert.equal(parseVipRanges('198.18.0.0/24, 10.1.2.3/32')?.length, 2);
  });

  it('refuses what is not an IPv4 CIDR, naming it', () => {
    for (const bad of ['198.18.0.0', '198.18.0.0/33', '300.1.1.1/8', 'x/8', '198.18.0.0/24,', '::1/128']) {
      assert.throws(() => parseVipRanges(bad), /not an IPv4 CIDR/, bad);
    }
  });

  it('allows an address inside any range, refuses one outside all, and refuses what is not an address', () => {
    const r = parseVipRanges('198.18.0.96/28,203.0.113.7/32');
    assert.equal(vipAllowed('198.18.0.100', r), true);
    assert.equal(vipAllowed('198.18.0.96', r), true);
    assert.equal(vipAllowed('198.18.0.111', r), true);
    assert.equal(vipAllowed('198.18.0.112', r), false);
    assert.equal(vipAllowed('198.18.0.1', r), false, 'the node network is not a VIP range');
    assert.equal(vipAllowed('203.0.113.7', r), true);
    assert.equal(vipAllowed('203.0.113.8', r), false);
    assert.equal(vipAllowed('nonsense', r), false);
    assert.equal(vipAllowed('10.0.0.1', null), true, 'unrestricted');
    assert.equal(vipAllowed('0.0.0.0', parseVipRanges('0.0.0.0/0')), true);
  });
});
