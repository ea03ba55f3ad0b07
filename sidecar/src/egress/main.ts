/**
 * The egress agent of the LB VIP modes (metallb, kube-vip): one pod per node
 * (a DaemonSet the operator owns, hostNetwork, NET_ADMIN only), which keeps in
 * the node's nftables the SNAT of the pair's SIP egress to the VIP (rules.ts).
 *
 * The pair's pod addresses come from its headless peers Service by DNS (which
 * lists both pods, ready or not), so the agent holds no API credentials. The
 * rules are per pod, not per role: both pods' addresses are translated from
 * the moment they exist (a backup emits nothing), so a failover needs nothing
 * from the agent, DNS or the API server. The table is replaced only when the
 * addresses change (and the conntrack entries of a pod that is gone are
 * deleted then), and removed when the agent stops.
 *
 * Environment (set by the operator, operator/src/desired.ts egressDaemonSet),
 * read and checked by config.ts loadEgressConfig.
 */
import { spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { type EgressConfig, loadEgressConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { nftDeleteScript, nftScript, staleSources, tableName } from './rules.ts';

let config: EgressConfig;
try {
  config = loadEgressConfig();
} catch (err) {
  console.error(`sipha-egress: ${(err as Error).message}`);
  process.exit(2);
}
const { pair, namespace, peers, vip, sipPort, pollMs } = config;
const table = tableName(namespace, pair);
const log = createLogger(config.logLevel, 'sipha-egress');

function nft(script: string): void {
  const r = spawnSync('nft', ['-f', '-'], { input: script, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nft failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
}

/** Deletes the SNAT's conntrack entries of addresses that are no longer the pair's pods (rules.ts staleSources). */
function forgetStale(ips: string[]): void {
  for (const proto of ['udp', 'tcp']) {
    const match = ['-p', proto, '--reply-dst', vip, '--reply-port-dst', String(sipPort)];
    const list = spawnSync('conntrack', ['-L', ...match], { encoding: 'utf8' });
    if (list.status !== 0) {
      log.error({ proto, stderr: list.stderr, err: list.error }, 'could not list the SNAT’s conntrack entries');
      continue;
    }
    for (const src of staleSources(list.stdout, ips)) {
      // Exit 1 when nothing matched any more (expired meanwhile): not an error.
      const del = spawnSync('conntrack', ['-D', ...match, '--orig-src', src], { encoding: 'utf8' });
      log.info({ proto, src, deleted: del.stderr.trim() }, 'deleted the conntrack entries of a pod that is gone');
    }
  }
}

async function podIps(): Promise<string[]> {
  try {
    return (await lookup(peers, { all: true, family: 4 })).map((a) => a.address).sort();
  } catch (err) {
    // NXDOMAIN while no pod exists yet; anything else keeps the rules as they are.
    if ((err as NodeJS.ErrnoException).code === 'ENOTFOUND') return [];
    throw err;
  }
}

let applied: string | undefined;
let stopping = false;

async function sync(): Promise<void> {
  let ips: string[];
  try {
    ips = await podIps();
  } catch (err) {
    log.warn({ err, peers }, 'the pair’s addresses are unknown: the rules stay as they are');
    return;
  }
  const key = ips.join(',');
  if (key === applied || stopping) return;
  try {
    nft(nftScript({ table, podIps: ips, vip, sipPort }));
    forgetStale(ips);
    applied = key;
    log.info({ table, podIps: ips, vip, sipPort }, 'SIP egress of the pair’s pods is translated to the VIP');
  } catch (err) {
    log.error({ err, table }, 'could not load the SNAT rules');
  }
}

function stop(signal: string): void {
  stopping = true;
  try {
    nft(nftDeleteScript(table));
    log.info({ table, signal }, 'removed the SNAT rules');
  } catch (err) {
    log.error({ err, table }, 'could not remove the SNAT rules');
  }
  process.exit(0);
}

process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
log.info({ pair, namespace, peers, vip, sipPort, table, pollMs }, 'egress agent started');
await sync();
setInterval(() => void sync(), pollMs);
