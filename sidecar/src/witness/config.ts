/**
 * The UDP witness's settings, read once from the environment. Bad values
 * stop the process with a message that names the variable.
 */
import { MAX_TTL_MS, witnessKey } from '../../../contract/witness-wire.ts';
import { type Env, int } from '../env-int.ts';

export interface WitnessConfig {
  readonly listen: { readonly address: string; readonly port: number };
  /** /metrics and /healthz; null: no HTTP. */
  readonly http: { readonly address: string; readonly port: number } | null;
  /** The one pair's witness key (derived from its replication key: witnessKey()). */
  readonly key: Buffer;
  /**
   * The longest lease granted, and how long a (re)started arbiter answers
   * nothing: at least the sidecars' SIPHA_WITNESS_TTL_MS.
   */
  readonly maxTtlMs: number;
  readonly logLevel: string;
}

/** Twice the sidecars' default lease (SIPHA_WITNESS_TTL_MS 1000): room to raise it without touching the witness. */
export const DEFAULT_MAX_TTL_MS = 2000;

/** `ip:port` (IPv4); port 0 lets the kernel pick one, which the process logs. */
function endpoint(name: string, raw: string): { address: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(raw);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new Error(`${name}=${raw}: expected ipv4:port`);
  return { address: m[1] as string, port };
}

export function loadWitnessConfig(env: Env = process.env): WitnessConfig {
  const listen = env.SIPHA_WITNESS_LISTEN;
  if (!listen) throw new Error('SIPHA_WITNESS_LISTEN is required (ip:port)');
  return {
    listen: endpoint('SIPHA_WITNESS_LISTEN', listen),
    http: env.SIPHA_WITNESS_HTTP ? endpoint('SIPHA_WITNESS_HTTP', env.SIPHA_WITNESS_HTTP) : null,
    key: keyOf(env),
    maxTtlMs: int(env, 'SIPHA_WITNESS_MAX_TTL_MS', DEFAULT_MAX_TTL_MS, 100, MAX_TTL_MS),
    logLevel: env.SIPHA_LOG_LEVEL ?? 'info',
  };
}

/**
 * SIPHA_WITNESS_KEY (base64 of witnessKey(pair key), printed by `main.ts --derive-key`)
 * keeps the pair's own key off the witness host; SIPHA_REPLICATION_KEY (the pair's
 * key) is accepted and derived here. One pair per witness for now.
 */
export function keyOf(env: Env): Buffer {
  const derived = env.SIPHA_WITNESS_KEY;
  const pairKey = env.SIPHA_REPLICATION_KEY;
  if (derived && pairKey) throw new Error('set SIPHA_WITNESS_KEY or SIPHA_REPLICATION_KEY, not both');
  const raw = derived ?? pairKey;
  const name = derived ? 'SIPHA_WITNESS_KEY' : 'SIPHA_REPLICATION_KEY';
  if (!raw) throw new Error('SIPHA_WITNESS_KEY or SIPHA_REPLICATION_KEY is required (base64)');
  if (raw.includes(',')) throw new Error(`${name}: one pair per witness for now (no list)`);
  const key = Buffer.from(raw, 'base64');
  if (key.length < 16) throw new Error(`${name} must be base64 of at least 16 bytes`);
  return derived ? key : witnessKey(key);
}
