/** A sipha pair on the netns bed: two hosts, each stock Kamailio + a sidecar in HA mode, one VIP. */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Kamailio, startKamailio } from './kamailio.ts';
import { type Host, NetBed } from './netbed.ts';
import { until, watchOutput } from './procs.ts';
import { parseExposition } from './prom-text.ts';
import { logLines, type Sidecar, startSidecar } from './sidecar.ts';

export const VIP = '198.18.0.100';

export interface PairOptions {
  /** Egress digests (see sidecar/src/proxy/egress-digest.ts). */
  digest?: boolean;
  /** Extra node flags for both sidecars (e.g. --inspect=127.0.0.1:9229: each host is its own netns). */
  nodeArgs?: string[];
  /** Settings for one sidecar only (by ordinal), over the shared ones. */
  envFor?: (ordinal: number) => Record<string, string>;
  /** A UDP witness (sidecar/src/witness/main.ts) on a host of its own, `witness` (.30); pairBed adds the host. */
  witness?: boolean;
  /** pairBed only: runs on the new bed before the pair starts (e.g. per-host files under /etc/netns). */
  beforeStart?: (bed: NetBed) => void;
  /** Both Kamailios: extra -A defines (e.g. WITH_AUTH) and environment. */
  kamailio?: { defines?: string[]; env?: Record<string, string> };
}

export interface PairNode {
  host: Host;
  kamailio: Kamailio;
  sidecar: Sidecar;
  /** Egress digest file (see sidecar/src/proxy/egress-digest.ts), when asked for. */
  digestFile?: string;
  /** Starts this node again (new Kamailio, new sidecar, same key and settings), e.g. after it was killed. */
  restart: (env?: Record<string, string>) => Promise<PairNode>;
  /** Starts a new sidecar beside the running Kamailio (as a kubelet restarts a crashed container), with extra settings. */
  restartSidecar: (env?: Record<string, string>) => Promise<PairNode>;
  /** Starts a new Kamailio beside the running sidecar (as a kubelet restarts the server container). */
  restartKamailio: () => Promise<PairNode>;
}

export async function startPair(
  bed: NetBed,
  a: Host,
  b: Host,
  env: Record<string, string> = {},
  opts: PairOptions = {},
): Promise<[PairNode, PairNode]> {
  const key = randomBytes(32).toString('base64');
  if (opts.witness) {
    const witness = await startWitness(bed.host('witness'), key, Number(env.SIPHA_WITNESS_TTL_MS ?? 1000));
    env = { SIPHA_WITNESS: `udp:${witness}`, ...env };
  }
  let generation = 0;
  const start = async (
    host: Host,
    peer: Host,
    ordinal: number,
    keep: Partial<PairNode> = {},
    extra: Record<string, string> = {},
  ): Promise<PairNode> => {
    // A restarted Kamailio gets a directory of its own (its ctl socket path).
    const kamailio =
      keep.kamailio ??
      (await startKamailio(bed, host, {
        sipha: true,
        publicIp: VIP,
        tag: generation++ ? `-${generation}` : '',
        ...opts.kamailio,
      }));
    const digestFile = opts.digest ? join(bed.subdir('digest'), `${host.name}.log`) : undefined;
    const sidecar =
      keep.sidecar ??
      (await startSidecar(
        host,
        {
          SIPHA_ORDINAL: String(ordinal),
          SIPHA_NODE_ADDRESS: host.ip,
          SIPHA_PEER_ADDRESS: peer.ip,
          SIPHA_REPLICATION_KEY: key,
          SIPHA_VIP: VIP,
          SIPHA_VIP_INTERFACE: host.iface,
          SIPHA_LOG_LEVEL: 'info',
          ...(digestFile ? { SIPHA_EGRESS_DIGEST_FILE: digestFile } : {}),
          ...env,
          ...opts.envFor?.(ordinal),
          ...extra,
        },
        { ...(opts.nodeArgs ? { nodeArgs: opts.nodeArgs } : {}), live: extra.SIPHA_TEST_LIVE_ONLY === '1' },
      ));
    const node: PairNode = {
      host,
      kamailio,
      sidecar,
      ...(digestFile ? { digestFile } : {}),
      restart: (more = {}) => start(host, peer, ordinal, {}, more),
      restartSidecar: (more = {}) => start(host, peer, ordinal, { kamailio }, more),
      restartKamailio: () => start(host, peer, ordinal, { sidecar }),
    };
    return node;
  };
  const [na, nb] = await Promise.all([start(a, b, 0), start(b, a, 1)]);
  await until(() => role(na) === 'master' && role(nb) === 'backup', 15000, 'a is master and b backup');
  return [na, nb];
}

/** Does this host have the VIP configured on its interface? */
export function holdsVip(n: PairNode): boolean {
  return n.host.run('ip', ['-4', '-o', 'addr', 'show', 'dev', n.host.iface]).includes(` ${VIP}/32`);
}

/** The role the sidecar reports; 'down' when it does not answer (dead, or its host is cut off). */
export function role(n: PairNode): string {
  let text: string;
  try {
    text = n.sidecar.scrape();
  } catch {
    return 'down';
  }
  // One series, labelled with the role held (none before the HA node is set up).
  const held = parseExposition(text).samples.find((s) => s.name === 'sipha_role' && s.value === 1);
  return held?.labels.role ?? 'unknown';
}

/** The digest lines with a given fate, without the fate: "<status|method> <cseq> <call-id> <sha1>". */
export function digests(n: PairNode, fate: 'sent' | 'withheld'): string[] {
  if (!n.digestFile) throw new Error('pair started without digests');
  let text = '';
  try {
    text = readFileSync(n.digestFile, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${fate} `))
    .map((l) => l.slice(fate.length + 1))
    .sort();
}

/** Hosts of a pair bed: the two SIP hosts, a client and a called party. */
export const WITNESS_HOST = { name: 'witness', octet: 30 };
const WITNESS_MAIN = fileURLToPath(new URL('../../sidecar/src/witness/main.ts', import.meta.url));

/**
 * Starts the UDP witness for the pair with `key` in `host` (the bed ends it), granting leases of
 * up to the sidecars' `ttlMs`; returns its ip:port once it answers (after its start-up quiet period).
 */
export async function startWitness(host: Host, key: string, ttlMs: number): Promise<string> {
  const listen = `${host.ip}:5064`;
  const child = host.spawn(process.execPath, [WITNESS_MAIN], {
    env: {
      ...process.env,
      SIPHA_WITNESS_LISTEN: listen,
      SIPHA_REPLICATION_KEY: key,
      SIPHA_WITNESS_MAX_TTL_MS: String(ttlMs),
      SIPHA_LOG_LEVEL: 'info',
    },
  });
  await watchOutput(child).waitFor(/witness answering/, 10000 + ttlMs);
  return listen;
}

export const PAIR_BED_HOSTS = [
  { name: 'a', octet: 1 },
  { name: 'b', octet: 2 },
  { name: 'client', octet: 10 },
  { name: 'uas', octet: 20 },
];

export interface PairBed {
  bed: NetBed;
  a: PairNode;
  b: PairNode;
  client: Host;
  uas: Host;
}

/**
 * A fresh bed with hosts a (.1), b (.2), client (.10) and uas (.20), and a
 * pair on a and b (a master). The bed is destroyed if the pair fails to start.
 */
export async function pairBed(env: Record<string, string> = {}, opts: PairOptions = {}): Promise<PairBed> {
  const bed = NetBed.create(opts.witness ? [...PAIR_BED_HOSTS, WITNESS_HOST] : PAIR_BED_HOSTS);
  try {
    opts.beforeStart?.(bed);
    const [a, b] = await startPair(bed, bed.host('a'), bed.host('b'), env, opts);
    return { bed, a, b, client: bed.host('client'), uas: bed.host('uas') };
  } catch (err) {
    await bed.destroy();
    throw err;
  }
}

/** The role changes and warnings both sidecars logged: what a failed assertion about roles should show. */
export function roleStory(...nodes: PairNode[]): string {
  return nodes
    .map((n) => {
      const lines = n.sidecar
        .output()
        .split('\n')
        .filter((l) => /role change|"level":(40|50)/.test(l));
      return `${n.host.name}:\n${lines.slice(-30).join('\n')}`;
    })
    .join('\n');
}

/**
 * When this sidecar served as master, by its own log ([from, to] epoch ms;
 * to = Infinity while it still serves): from "serving as master" to the role
 * change that left master (logged just before it stops serving).
 */
export function servingSpans(n: PairNode): [number, number][] {
  const spans: [number, number][] = [];
  let since: number | null = null;
  for (const l of logLines(n.sidecar.output())) {
    if (l.msg === 'serving as master' && since === null) since = l.time;
    else if (l.msg === 'role change' && l.from === 'master' && since !== null) {
      spans.push([since, l.time]);
      since = null;
    }
  }
  if (since !== null) spans.push([since, Number.POSITIVE_INFINITY]);
  return spans;
}

/** How long both sidecars served at once, by their logs (one host clock: the bed's processes share it). */
export function twoMasterMs(x: PairNode, y: PairNode): number {
  let total = 0;
  for (const [a0, a1] of servingSpans(x))
    for (const [b0, b1] of servingSpans(y)) total += Math.max(0, Math.min(a1, b1, Date.now()) - Math.max(a0, b0));
  return total;
}
