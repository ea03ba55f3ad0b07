/**
 * sipha sidecar: the data plane that sits in front of the local SIP server.
 * Configured by environment variables (see config.ts and docs/sidecar.md).
 */
import { loadConfig } from './config.ts';
import { startHttp } from './http.ts';
import { createLogger } from './log.ts';
import { createMetrics } from './metrics.ts';
import { EdgeProxy } from './proxy/edge-proxy.ts';

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    console.error(`sipha-sidecar: ${(err as Error).message}`);
    process.exit(2);
  }
  const log = createLogger(config.logLevel, 'sipha-sidecar');
  const metrics = createMetrics();
  const proxy = new EdgeProxy(config, log.child({ room: 'edge' }), metrics);
  await proxy.start();
  const http = await startHttp(config.httpPort, metrics.registry, () => proxy.serverReady);
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    proxy.close();
    http.close();
    setTimeout(() => process.exit(0), 50).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  console.error(`sipha-sidecar: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
