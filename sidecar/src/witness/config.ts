/**
 * The UDP witness's settings, read once from the environment. Bad values
 * stop the process with a message that names the variable.
 */
export interface WitnessConfig {
  readonly listen: { readonly address: string; readonly port: number };
  /** /metrics and /healthz; null: no HTTP. */
  readonly http: { readonly address: string; readonly port: number } | null;
  /** The one pair's replication key (the pair's Secret). */
  readonly key: Buffer;
  readonly logLevel: string;
}

type Env = Record<string, string | undefined>;

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
  const rawKey = env.SIPHA_REPLICATION_KEY;
  if (!rawKey) throw new Error('SIPHA_REPLICATION_KEY is required (base64 key of the pair this witness serves)');
  if (rawKey.includes(',')) throw new Error('SIPHA_REPLICATION_KEY: one pair per witness for now (no list)');
  const key = Buffer.from(rawKey, 'base64');
  if (key.length < 16) throw new Error('SIPHA_REPLICATION_KEY must be base64 of at least 16 bytes');
  return {
    listen: endpoint('SIPHA_WITNESS_LISTEN', listen),
    http: env.SIPHA_WITNESS_HTTP ? endpoint('SIPHA_WITNESS_HTTP', env.SIPHA_WITNESS_HTTP) : null,
    key,
    logLevel: env.SIPHA_LOG_LEVEL ?? 'info',
  };
}
