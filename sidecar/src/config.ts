/**
 * Sidecar settings, parsed once at start from the environment (never read
 * again on the hot path). Bad values stop the process with a clear message.
 */
import { isIPv4 } from 'node:net';
import {
  DEFAULT_TLS_PORT,
  TLS_CLIENT_AUTH_ENV,
  TLS_CLIENT_AUTH_VALUES,
  TLS_DIR_ENV,
  TLS_OUTBOUND_CA_ENV,
  TLS_PORT_ENV,
  TLS_SNI_ENV,
  type TlsClientAuth,
} from '../../contract/tls-settings.ts';
import { type Env, int } from './env-int.ts';
import { type Keyring, keyringOf, parseKey, readKeyDir } from './ha/keyring.ts';
import { DEFAULT_LINK_BACKLOG } from './proxy/server-link.ts';
import { DEFAULT_TCP_LIMITS, type TcpLimits } from './proxy/tcp-flows.ts';
import type { TlsSettings } from './tls/credentials.ts';
export interface SidecarConfig {
  /** Address the public SIP sockets bind to (the host/pod address). */
  readonly publicAddress: string;
  readonly sipPort: number;
  /** The SIP server's TCP listener on loopback (the link). */
  readonly serverHost: string;
  readonly serverPort: number;
  /** Loopback UDP port where the server hands over what it sends. */
  readonly egressPort: number;
  /** Parallel link connections; a dialog always uses the same one. */
  readonly linkConnections: number;
  /** Bytes the server may leave unread on a link connection before the edge holds back (server-link.ts). */
  readonly linkMaxBacklog: number;
  /** SIPHA_LINK_TOKEN (contract/link.ts): null when not set (the link is then trusted as loopback). */
  readonly linkToken: string | null;
  readonly httpPort: number;
  readonly logLevel: string;
  readonly maxMessageBytes: number;
  /**
   * SIPHA_TCP_MAX_FLOWS, SIPHA_TCP_HEADER_TIMEOUT_MS, SIPHA_TCP_IDLE_MS, SIPHA_TCP_MAX_WRITE_BUFFER,
   * SIPHA_TCP_FLOW_RATE, SIPHA_TCP_MAX_FLOWS_PER_ADDRESS, SIPHA_TCP_ACCEPT_RATE_PER_ADDRESS.
   */
  readonly tcpLimits: TcpLimits;
  /**
   * SIPHA_REQUEST_RATE_PER_ADDRESS, SIPHA_REQUEST_BURST_PER_ADDRESS: requests a
   * second one client address may send, over every transport together, after a burst.
   */
  readonly requestRate: { readonly rate: number; readonly burst: number };
  /** SIP over TLS (contract/tls-settings.ts); null: TLS is refused, never sent as TCP. */
  readonly tls: TlsSettings | null;
  /** Set when this sidecar is one of a pair (HA); absent: a single edge proxy. */
  readonly ha: HaSettings | null;
}

export interface HaSettings {
  readonly ordinal: 0 | 1;
  /** Elected first when both start ready together (spec.preferredMaster; default 0). */
  readonly preferredMaster: 0 | 1;
  readonly nodeAddress: string;
  readonly peerAddress: string;
  readonly heartbeatPort: number;
  readonly replicationPort: number;
  readonly intervalMs: number;
  readonly misses: number;
  readonly startupGraceMs: number;
  readonly replicationMode: 'sync' | 'async';
  readonly ackDeadlineMs: number;
  readonly mainHungMs: number;
  /** The pair's keys: from SIPHA_KEY_DIR (files, re-read while running) or SIPHA_REPLICATION_KEY (one key). */
  readonly keys: Keyring;
  /** Where the key files are; null when the key came from the environment. */
  readonly keyDir: string | null;
  readonly vip: string;
  readonly vipInterface: string;
  readonly natKeepaliveMs: number;
  /** SIPHA_STATE_CACHE_MAX: registrations kept for a joining backup's burst (distinct Call-IDs). */
  readonly stateCacheMax: number;
  /** Who decides self-elections on silence (decision 0005); null: nobody (split-brain possible in a partition). */
  readonly witness: WitnessSettings | null;
  /** arp: this node adds the VIP; metallb / kube-vip: a LoadBalancer Service follows the master label. */
  readonly vipMode: 'arp' | 'metallb' | 'kube-vip';
}

export interface WitnessSettings {
  /** udp: the sipha witness process at address:port; lease: a Kubernetes Lease <pair>-witness (in a cluster). */
  readonly kind: 'udp' | 'lease';
  readonly address: string;
  readonly port: number;
  /** Lease asked for by each claim. */
  readonly ttlMs: number;
  /** Claims are repeated this often while the peer is silent. */
  readonly renewMs: number;
  /** A master renews its lease this often while its backup is not in sync (witness-claims.ts holdWhile); 0: never. */
  readonly holdRenewMs: number;
  /**
   * A master whose peer went silent and that holds no grant this long after the
   * last beat it heard stands down. At most (misses - 1) x interval: the peer,
   * which heard its last beat at most one interval earlier, may claim after
   * misses x interval, and the master must have stopped by then.
   */
  readonly confirmMs: number;
  /**
   * The master claims while the peer is only quiet, ahead of the backup, and its
   * deadline counts from the last beat (decision 0005). Only with a witness that
   * answers in a few ms (the UDP arbiter): a Lease claim (an API server round
   * trip, often tens of ms on a loaded server) does not fit in the 30 ms this
   * leaves, and masters stood down and came back on routine pod deletions.
   */
  readonly headStart: boolean;
}

function witnessSettings(env: Env, intervalMs: number, misses: number): WitnessSettings | null {
  const raw = env.SIPHA_WITNESS;
  if (!raw) return null;
  const headStart = raw !== 'lease';
  // Half an interval of room for scheduling below the bound.
  const safeMs = (misses - 1) * intervalMs;
  const ttlMs = int(env, 'SIPHA_WITNESS_TTL_MS', 1000, 100, 60000);
  const renewMs = int(env, 'SIPHA_WITNESS_RENEW_MS', 20, 5, 10000);
  const timing = {
    ttlMs,
    renewMs,
    // Four renewals a ttl: a lease held has at least three quarters of it left.
    holdRenewMs: int(env, 'SIPHA_WITNESS_HOLD_RENEW_MS', Math.max(renewMs, Math.floor(ttlMs / 4)), 0, Math.floor(ttlMs / 2)),
    confirmMs: headStart
      ? int(env, 'SIPHA_WITNESS_CONFIRM_MS', safeMs - Math.round(intervalMs / 2), 1, safeMs)
      : int(env, 'SIPHA_WITNESS_CONFIRM_MS', 500, 50, 60000),
    headStart,
  };
  // The master's claim leaves when the peer is quiet; the witness must answer before the
  // confirm deadline, or the master stands down without having asked (at 2-3 misses it would
  // on any short silence). At least one interval for that round trip.
  const quietMs = quietIntervals(misses) * intervalMs;
  if (headStart && timing.confirmMs - quietMs < intervalMs) {
    throw new Error(
      `with a witness, SIPHA_HEARTBEAT_MISSES=${misses} leaves the master ${timing.confirmMs - quietMs} ms between its claim (${quietMs} ms of silence) and its deadline (${timing.confirmMs} ms): use 4 misses or more`,
    );
  }
  if (raw === 'lease') return { kind: 'lease', address: '', port: 0, ...timing };
  const m = /^udp:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new Error(`SIPHA_WITNESS=${raw}: expected udp:<ipv4>:<port> or lease`);
  }
  return { kind: 'udp', address: m[1] as string, port: Number(m[2]), ...timing };
}

/** Missed intervals after which a master asks the witness (the peer asks after `misses`). */
export function quietIntervals(misses: number): number {
  return misses >= 5 ? 2 : 1;
}

function linkToken(raw: string | undefined): string | null {
  if (raw === undefined || raw === '') return null;
  // It travels in a SIP header and a Kamailio config string: token characters only.
  if (!/^[A-Za-z0-9_-]{16,128}$/.test(raw)) throw new Error('SIPHA_LINK_TOKEN: 16 to 128 of A-Z a-z 0-9 _ -');
  return raw;
}

/**
 * In a cluster both pods of a StatefulSet get the same environment: the
 * ordinal comes from the pod name (<pair>-0 / <pair>-1) and the peer is the
 * other ordinal behind the headless peers Service (resolved at start).
 */
function inCluster(env: Env): { ordinal: 0 | 1; peer: string } | null {
  const pod = env.SIPHA_POD_NAME;
  const pair = env.SIPHA_PAIR;
  const svc = env.SIPHA_PEERS_SERVICE;
  if (!pod || !pair || !svc) return null;
  const m = /-(0|1)$/.exec(pod);
  if (!m) throw new Error(`SIPHA_POD_NAME=${pod}: expected <pair>-0 or <pair>-1`);
  const ordinal = Number(m[1]) as 0 | 1;
  return { ordinal, peer: `${pair}-${1 - ordinal}.${svc}` };
}

function haSettings(env: Env): HaSettings | null {
  const cluster = inCluster(env);
  const peer = env.SIPHA_PEER_ADDRESS ?? cluster?.peer;
  if (!peer) return null;
  const need = (name: string) => {
    const v = env[name];
    if (!v) throw new Error(`${name} is required when SIPHA_PEER_ADDRESS is set`);
    return v;
  };
  const keyDir = env.SIPHA_KEY_DIR || null;
  if (keyDir !== null && env.SIPHA_REPLICATION_KEY) throw new Error('set SIPHA_KEY_DIR or SIPHA_REPLICATION_KEY, not both');
  const keys = keyDir !== null ? readKeyDir(keyDir) : keyringOf(parseKey(need('SIPHA_REPLICATION_KEY'), 'SIPHA_REPLICATION_KEY'));
  const mode = env.SIPHA_REPLICATION_MODE ?? 'sync';
  if (mode !== 'sync' && mode !== 'async') throw new Error(`SIPHA_REPLICATION_MODE=${mode}: expected sync or async`);
  const intervalMs = int(env, 'SIPHA_HEARTBEAT_INTERVAL_MS', 20, 5, 1000);
  const misses = int(env, 'SIPHA_HEARTBEAT_MISSES', 5, 2, 20);
  return {
    ordinal: (env.SIPHA_ORDINAL !== undefined ? int(env, 'SIPHA_ORDINAL', 0, 0, 1) : (cluster?.ordinal ?? 0)) as 0 | 1,
    preferredMaster: int(env, 'SIPHA_PREFERRED_MASTER', 0, 0, 1) as 0 | 1,
    nodeAddress: need('SIPHA_NODE_ADDRESS'),
    peerAddress: peer,
    heartbeatPort: int(env, 'SIPHA_HEARTBEAT_PORT', 5062, 1, 65535),
    replicationPort: int(env, 'SIPHA_REPLICATION_PORT', 5063, 1, 65535),
    intervalMs,
    misses,
    startupGraceMs: int(env, 'SIPHA_STARTUP_GRACE_MS', Math.max(1000, intervalMs * misses * 4), 100, 600000),
    replicationMode: mode,
    ackDeadlineMs: int(env, 'SIPHA_ACK_DEADLINE_MS', 500, 20, 60000),
    // Far above a major GC pause (tens of ms with the 128 MB old space), far below a liveness probe.
    mainHungMs: int(env, 'SIPHA_MAIN_HUNG_MS', 1000, 200, 60000),
    keys,
    keyDir,
    vip: need('SIPHA_VIP'),
    vipInterface: env.SIPHA_VIP_INTERFACE ?? 'eth0',
    natKeepaliveMs: int(env, 'SIPHA_NAT_KEEPALIVE_MS', 20000, 0, 3600000),
    stateCacheMax: int(env, 'SIPHA_STATE_CACHE_MAX', 250000, 1, 10000000),
    vipMode: vipMode(env.SIPHA_VIP_MODE),
    witness: witnessSettings(env, intervalMs, misses),
  };
}

export function loadConfig(env: Env = process.env): SidecarConfig {
  const sipPort = int(env, 'SIPHA_SIP_PORT', 5060, 1, 65535);
  return {
    publicAddress: env.SIPHA_PUBLIC_ADDRESS ?? '0.0.0.0',
    sipPort,
    serverHost: env.SIPHA_SERVER_HOST ?? '127.0.0.1',
    serverPort: int(env, 'SIPHA_SERVER_PORT', 5070, 1, 65535),
    egressPort: int(env, 'SIPHA_EGRESS_PORT', 5061, 1, 65535),
    linkConnections: int(env, 'SIPHA_LINK_CONNECTIONS', 2, 1, 64),
    linkMaxBacklog: int(env, 'SIPHA_LINK_MAX_BACKLOG', DEFAULT_LINK_BACKLOG, 65536, 1 << 30),
    linkToken: linkToken(env.SIPHA_LINK_TOKEN),
    httpPort: int(env, 'SIPHA_HTTP_PORT', 9090, 0, 65535),
    logLevel: env.SIPHA_LOG_LEVEL ?? 'info',
    maxMessageBytes: int(env, 'SIPHA_MAX_MESSAGE_BYTES', 65535, 1024, 1 << 20),
    tcpLimits: {
      maxFlows: int(env, 'SIPHA_TCP_MAX_FLOWS', DEFAULT_TCP_LIMITS.maxFlows, 1, 1_000_000),
      headerTimeoutMs: int(env, 'SIPHA_TCP_HEADER_TIMEOUT_MS', DEFAULT_TCP_LIMITS.headerTimeoutMs, 100, 600_000),
      idleMs: int(env, 'SIPHA_TCP_IDLE_MS', DEFAULT_TCP_LIMITS.idleMs, 100, 86_400_000),
      maxWriteBuffer: int(env, 'SIPHA_TCP_MAX_WRITE_BUFFER', DEFAULT_TCP_LIMITS.maxWriteBuffer, 65536, 1 << 30),
      flowRate: int(env, 'SIPHA_TCP_FLOW_RATE', DEFAULT_TCP_LIMITS.flowRate, 0, 1_000_000),
      maxFlowsPerAddress: int(env, 'SIPHA_TCP_MAX_FLOWS_PER_ADDRESS', DEFAULT_TCP_LIMITS.maxFlowsPerAddress, 0, 1_000_000),
      acceptRatePerAddress: int(env, 'SIPHA_TCP_ACCEPT_RATE_PER_ADDRESS', DEFAULT_TCP_LIMITS.acceptRatePerAddress, 0, 1_000_000),
    },
    requestRate: requestRate(env),
    tls: tlsSettings(env, sipPort),
    ha: haSettings(env),
  };
}

/**
 * A phone sends a few requests a second and an office NAT's few hundred phones
 * some tens; a flooder thousands. 1000 a second (what one TCP connection may
 * send, SIPHA_TCP_FLOW_RATE) after a burst of 2 s worth; a trunk or SBC that
 * sends more from one address sets more, or 0 (no limit).
 */
function requestRate(env: Env): { rate: number; burst: number } {
  const rate = int(env, 'SIPHA_REQUEST_RATE_PER_ADDRESS', 1000, 0, 1_000_000);
  return { rate, burst: int(env, 'SIPHA_REQUEST_BURST_PER_ADDRESS', Math.max(1, 2 * rate), 1, 10_000_000) };
}

function tlsSettings(env: Env, sipPort: number): TlsSettings | null {
  const dir = env[TLS_DIR_ENV];
  if (!dir) return null;
  const port = int(env, TLS_PORT_ENV, DEFAULT_TLS_PORT, 1, 65535);
  if (port === sipPort) throw new Error(`${TLS_PORT_ENV}=${port} is the SIP port too`);
  const auth = (env[TLS_CLIENT_AUTH_ENV] ?? 'none').toLowerCase();
  if (!TLS_CLIENT_AUTH_VALUES.includes(auth as TlsClientAuth))
    throw new Error(`${TLS_CLIENT_AUTH_ENV}=${auth}: expected one of ${TLS_CLIENT_AUTH_VALUES.join(', ')}`);
  const sni = new Map<string, string>();
  for (const item of (env[TLS_SNI_ENV] ?? '').split(',').filter((x) => x.trim() !== '')) {
    const eq = item.indexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new Error(`${TLS_SNI_ENV}: "${item}" is not name=directory`);
    sni.set(item.slice(0, eq).trim().toLowerCase(), item.slice(eq + 1).trim());
  }
  return { dir, port, clientAuth: auth as TlsClientAuth, sni, outboundCaFile: env[TLS_OUTBOUND_CA_ENV] || null };
}

/** The egress agent of the LB VIP modes (egress/main.ts), set by the operator's DaemonSet. */
export interface EgressConfig {
  pair: string;
  namespace: string;
  /** The headless peers Service's name in the cluster's DNS: it lists both pods' addresses. */
  peers: string;
  vip: string;
  sipPort: number;
  pollMs: number;
  logLevel: string;
}

export function loadEgressConfig(env: Env = process.env): EgressConfig {
  const need = (name: string) => {
    const v = env[name];
    if (!v) throw new Error(`${name} is required`);
    return v;
  };
  const vip = need('SIPHA_VIP');
  if (!isIPv4(vip)) throw new Error(`SIPHA_VIP=${vip}: expected an IPv4 address`);
  const namespace = need('SIPHA_POD_NAMESPACE');
  return {
    pair: need('SIPHA_PAIR'),
    namespace,
    peers: `${need('SIPHA_PEERS_SERVICE')}.${namespace}.svc`,
    vip,
    sipPort: int(env, 'SIPHA_SIP_PORT', 5060, 1, 65535),
    pollMs: int(env, 'SIPHA_EGRESS_POLL_MS', 1000, 100, 600_000),
    logLevel: env.SIPHA_LOG_LEVEL ?? 'info',
  };
}

function vipMode(raw: string | undefined): 'arp' | 'metallb' | 'kube-vip' {
  const m = raw ?? 'arp';
  if (m !== 'arp' && m !== 'metallb' && m !== 'kube-vip')
    throw new Error(`SIPHA_VIP_MODE=${m}: expected arp, metallb or kube-vip`);
  return m;
}
