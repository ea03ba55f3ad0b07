/**
 * Sidecar settings, parsed once at start from the environment (never read
 * again on the hot path). Bad values stop the process with a clear message.
 */
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
  readonly httpPort: number;
  readonly logLevel: string;
  readonly maxMessageBytes: number;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name}=${raw}: expected an integer from ${min} to ${max}`);
  }
  return n;
}

export function loadConfig(env: Env = process.env): SidecarConfig {
  return {
    publicAddress: env.SIPHA_PUBLIC_ADDRESS ?? '0.0.0.0',
    sipPort: int(env, 'SIPHA_SIP_PORT', 5060, 1, 65535),
    serverHost: env.SIPHA_SERVER_HOST ?? '127.0.0.1',
    serverPort: int(env, 'SIPHA_SERVER_PORT', 5070, 1, 65535),
    egressPort: int(env, 'SIPHA_EGRESS_PORT', 5061, 1, 65535),
    linkConnections: int(env, 'SIPHA_LINK_CONNECTIONS', 2, 1, 64),
    httpPort: int(env, 'SIPHA_HTTP_PORT', 9090, 0, 65535),
    logLevel: env.SIPHA_LOG_LEVEL ?? 'info',
    maxMessageBytes: int(env, 'SIPHA_MAX_MESSAGE_BYTES', 65535, 1024, 1 << 20),
  };
}
