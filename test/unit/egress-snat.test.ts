/**
 * The LB modes' SIP egress SNAT (decision 0010): the operator's egress agent
 * DaemonSet (only in metallb / kube-vip mode, NET_ADMIN only, the pair's own
 * pods unchanged) and the nft script the agent loads.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PAIR_LABEL } from '../../contract/names.ts';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { appliedObjects, EGRESS_OF_LABEL, egressDaemonSet, statefulSet } from '../../operator/src/desired.ts';
import { loadEgressConfig } from '../../sidecar/src/config.ts';
import { nftDeleteScript, nftScript, staleSources, tableName } from '../../sidecar/src/egress/rules.ts';
import { testPair } from '../lib/siphapair-fixture.ts';

type Mode = SipHaPair['spec']['vip']['mode'];
const pair = (mode: Mode): SipHaPair =>
  testPair({
    sidecar: { image: 'sidecar:1' },
    ports: { sip: 5070, serverLink: 5071, egress: 5061, heartbeat: 5062, replication: 5063, metrics: 9090 },
    vip: mode === 'arp' ? { address: '198.18.0.100', mode, interface: 'eth0' } : { address: '198.18.0.100', mode },
  });
// biome-ignore lint/suspicious/noExplicitAny: reading into the generated manifests
type Any = any;
const podSpec = (mode: Mode) => (statefulSet(pair(mode)) as Any).spec.template.spec;
const sidecarOf = (mode: Mode) => podSpec(mode).containers.find((c: Any) => c.name === 'sipha-sidecar');

describe('the egress agent in the operator’s desired objects', () => {
  it('exists in the LB modes only, and is applied after the StatefulSet', () => {
    assert.equal(egressDaemonSet(pair('arp')), null);
    assert.ok(!appliedObjects(pair('arp')).some((o) => o.kind === 'DaemonSet'));
    for (const mode of ['metallb', 'kube-vip'] as const) {
      const kinds = appliedObjects(pair(mode)).map((o) => o.kind);
      assert.equal(kinds.at(-1), 'DaemonSet', mode);
      assert.equal(egressDaemonSet(pair(mode))?.metadata?.name, 'p-egress');
    }
  });

  it('runs on the node’s network with NET_ADMIN and nothing else, and no API token', () => {
    const ds = egressDaemonSet(pair('metallb')) as Any;
    const spec = ds.spec.template.spec;
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet');
    assert.equal(spec.automountServiceAccountToken, false);
    assert.equal(spec.containers.length, 1);
    const c = spec.containers[0];
    assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] });
    assert.equal(c.securityContext.privileged, undefined);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.image, 'sidecar:1');
    assert.deepEqual(c.command, ['node', 'sidecar/src/egress/main.ts']);
    const env = Object.fromEntries(c.env.filter((e: Any) => 'value' in e).map((e: Any) => [e.name, e.value]));
    assert.deepEqual(env, { SIPHA_PAIR: 'p', SIPHA_PEERS_SERVICE: 'p-peers', SIPHA_VIP: '198.18.0.100', SIPHA_SIP_PORT: '5070' });
    assert.ok(!c.env.some((e: Any) => e.valueFrom?.secretKeyRef), 'no key of the pair');
  });

  it('its pods carry no pair label (the pair’s Services and the operator’s pod list select by it)', () => {
    const ds = egressDaemonSet(pair('metallb')) as Any;
    assert.equal(ds.spec.template.metadata.labels[PAIR_LABEL], undefined);
    assert.equal(ds.spec.template.metadata.labels[EGRESS_OF_LABEL], 'p');
    assert.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  });

  it('leaves the pair’s pods as they were: no capability, no hostNetwork, no init container in the LB modes', () => {
    for (const mode of ['metallb', 'kube-vip'] as const) {
      assert.equal(sidecarOf(mode).securityContext, undefined, mode);
      assert.equal(podSpec(mode).hostNetwork, undefined, mode);
      assert.equal(podSpec(mode).initContainers, undefined, mode);
      for (const c of podSpec(mode).containers) assert.equal(c.securityContext?.capabilities, undefined, `${mode} ${c.name}`);
    }
    assert.deepEqual(sidecarOf('arp').securityContext, { capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } });
  });
});

describe('the nft script of the egress agent', () => {
  const table = tableName('ns', 'p');

  it('names one table per pair, a short nft identifier', () => {
    assert.match(table, /^sipha_egress_[0-9a-f]{12}$/);
    assert.notEqual(tableName('ns', 'q'), table);
    assert.notEqual(tableName('ns2', 'p'), table);
  });

  it('replaces the pair’s table atomically and translates only the SIP port, UDP and TCP, to VIP:port', () => {
    const s = nftScript({ table, podIps: ['198.19.1.4', '198.19.0.4', '198.19.1.4'], vip: '198.18.0.100', sipPort: 5070 });
    const lines = s.trim().split('\n');
    assert.deepEqual(lines.slice(0, 3), [`table ip ${table}`, `delete table ip ${table}`, `table ip ${table} {`]);
    assert.ok(s.includes('type nat hook postrouting priority 90; policy accept;'));
    const rules = lines.filter((l) => l.includes('snat'));
    assert.deepEqual(
      rules.map((l) => l.trim()),
      ['udp', 'tcp'].map(
        (p) => `ip saddr { 198.19.0.4, 198.19.1.4 } ${p} sport 5070 meta mark & 0x4000 == 0 snat to 198.18.0.100:5070`,
      ),
    );
    // Nothing else is translated: not the peer link (5062/5063), not the metrics port, no other source.
    assert.ok(!/5062|5063|9090|masquerade|dport/.test(s));
  });

  it('without pod addresses: the table and its chain, no rule; the exit removes the table', () => {
    const s = nftScript({ table, podIps: [], vip: '198.18.0.100', sipPort: 5060 });
    assert.ok(s.includes('chain postrouting') && !s.includes('snat'));
    assert.equal(nftDeleteScript(table), `table ip ${table}\ndelete table ip ${table}\n`);
  });

  it('refuses what is not an IPv4 address or a port (nothing from DNS reaches nft unchecked)', () => {
    const base = { table, podIps: ['198.19.0.4'], vip: '198.18.0.100', sipPort: 5060 };
    assert.throws(() => nftScript({ ...base, podIps: ['198.19.0.4; flush ruleset'] }));
    assert.throws(() => nftScript({ ...base, vip: '::1' }));
    assert.throws(() => nftScript({ ...base, sipPort: 0 }));
  });

  it('finds the SNAT flows of pods that are gone, from conntrack’s listing', () => {
    const listing = [
      'udp      17 29 src=198.19.1.5 dst=198.18.8.202 sport=5060 dport=5060 src=198.18.8.202 dst=198.18.8.100 sport=5060 dport=5060 mark=0 use=1',
      'udp      17 110 src=198.19.0.4 dst=198.18.8.201 sport=5060 dport=5080 src=198.18.8.201 dst=198.18.8.100 sport=5080 dport=5060 [ASSURED] mark=0 use=1',
      'udp      17 110 src=198.19.0.4 dst=198.18.8.202 sport=5060 dport=5060 src=198.18.8.202 dst=198.18.8.100 sport=5060 dport=5060 [ASSURED] mark=0 use=1',
      'conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.',
    ].join('\n');
    assert.deepEqual(staleSources(listing, ['198.19.1.5', '198.19.0.9']), ['198.19.0.4']);
    assert.deepEqual(staleSources(listing, ['198.19.1.5', '198.19.0.4']), []);
    assert.deepEqual(staleSources('', []), []);
  });
});

describe("the egress agent's settings (config.ts loadEgressConfig)", () => {
  const env = (more: Record<string, string | undefined> = {}) => ({
    SIPHA_PAIR: 'edge',
    SIPHA_POD_NAMESPACE: 'voice',
    SIPHA_PEERS_SERVICE: 'edge-peers',
    SIPHA_VIP: '198.18.0.100',
    SIPHA_SIP_PORT: '5080',
    ...more,
  });

  it('reads what the DaemonSet sets, with defaults for the rest', () => {
    assert.deepEqual(loadEgressConfig(env()), {
      pair: 'edge',
      namespace: 'voice',
      peers: 'edge-peers.voice.svc',
      vip: '198.18.0.100',
      sipPort: 5080,
      pollMs: 1000,
      logLevel: 'info',
    });
  });

  it('says what is wrong instead of running with NaN or nothing', () => {
    assert.throws(() => loadEgressConfig(env({ SIPHA_SIP_PORT: 'five' })), /SIPHA_SIP_PORT=five: expected an integer/);
    assert.throws(() => loadEgressConfig(env({ SIPHA_EGRESS_POLL_MS: '0' })), /SIPHA_EGRESS_POLL_MS=0/);
    assert.throws(() => loadEgressConfig(env({ SIPHA_VIP: 'vip.example' })), /SIPHA_VIP=vip.example: expected an IPv4/);
    assert.throws(() => loadEgressConfig(env({ SIPHA_PAIR: undefined })), /SIPHA_PAIR is required/);
  });
});
