/**
 * sipha operator: reconciles SipHaPair resources.
 *
 *   node operator/src/main.ts [--kubeconfig F] [--namespace NS] [--log-level L]
 *     [--metrics-port N] [--leader-elect=false] [--lease-namespace NS]
 *     [--lease-name N] [--lease-duration S] [--identity ID] [--concurrency N]
 *     [--allowed-vip-ranges CIDR,CIDR...]
 *
 * Every flag also reads from SIPHA_OPERATOR_<FLAG> (e.g. SIPHA_OPERATOR_NAMESPACE).
 */
import http from 'node:http';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import { Controller } from './controller.ts';
import { EventRecorder } from './events.ts';
import { connect } from './kube.ts';
import { LeaderElector } from './leader.ts';
import { Reconciler } from './reconcile.ts';
import { type Cidr, parseVipRanges } from './vip-ranges.ts';

const env = (k: string) => process.env[`SIPHA_OPERATOR_${k.toUpperCase().replaceAll('-', '_')}`];
const { values: v } = parseArgs({
  options: {
    kubeconfig: { type: 'string', default: env('kubeconfig') ?? process.env.KUBECONFIG },
    namespace: { type: 'string', default: env('namespace') },
    'log-level': { type: 'string', default: env('log-level') ?? 'info' },
    'metrics-port': { type: 'string', default: env('metrics-port') ?? '8080' },
    'leader-elect': { type: 'string', default: env('leader-elect') ?? 'true' },
    'lease-namespace': { type: 'string', default: env('lease-namespace') ?? process.env.POD_NAMESPACE ?? 'default' },
    'lease-name': { type: 'string', default: env('lease-name') ?? 'sipha-operator' },
    'lease-duration': { type: 'string', default: env('lease-duration') ?? '15' },
    identity: { type: 'string', default: env('identity') ?? `${hostname()}-${process.pid}` },
    concurrency: { type: 'string', default: env('concurrency') ?? '8' },
    'allowed-vip-ranges': { type: 'string', default: env('allowed-vip-ranges') ?? '' },
  },
});

const num = (name: string, raw: string | undefined, min: number, max: number): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`sipha-operator: --${name}=${raw}: expected an integer from ${min} to ${max}`);
    process.exit(2);
  }
  return n;
};
const metricsPort = num('metrics-port', v['metrics-port'], 0, 65535);
const leaseDuration = num('lease-duration', v['lease-duration'], 2, 300);
const concurrency = num('concurrency', v.concurrency, 1, 64);
let allowedVipRanges: Cidr[] | null;
try {
  allowedVipRanges = parseVipRanges(v['allowed-vip-ranges']);
} catch (err) {
  console.error(`sipha-operator: --allowed-vip-ranges: ${(err as Error).message}`);
  process.exit(2);
}

const log = pino({ level: v['log-level'], name: 'sipha-operator', base: { identity: v.identity } });
const kube = connect(v.kubeconfig);
const events = new EventRecorder(kube, log);
const reconciler = new Reconciler(kube, events, log, { allowedVipRanges });
if (allowedVipRanges === null)
  log.warn('no --allowed-vip-ranges: a SipHaPair may announce any address (chart value allowedVipRanges)');
let controller: Controller | null = null;

const registry = new Registry();
collectDefaultMetrics({ register: registry });
const leaderGauge = new Gauge({ name: 'sipha_operator_leader', help: '1 while this replica leads', registers: [registry] });
new Counter({
  name: 'sipha_operator_applies_total',
  help: 'Objects server-side-applied',
  registers: [registry],
  collect() {
    this.reset();
    this.inc(reconciler.counters.applied);
  },
});
new Gauge({
  name: 'sipha_operator_queue_depth',
  help: 'Pairs waiting for a reconcile',
  registers: [registry],
  collect() {
    this.set(controller?.queue.depth ?? 0);
  },
});

const startController = () => {
  controller = new Controller(kube, reconciler, v.namespace, log, concurrency);
  controller.start();
  leaderGauge.set(1);
};
const stopController = () => {
  controller?.stop();
  controller = null;
  leaderGauge.set(0);
};

const elector =
  v['leader-elect'] === 'false'
    ? null
    : new LeaderElector(
        kube,
        {
          namespace: v['lease-namespace'] as string,
          name: v['lease-name'] as string,
          identity: v.identity as string,
          leaseDurationS: leaseDuration,
          retryMs: Math.max(200, (leaseDuration * 1000) / 5),
        },
        log,
        startController,
        stopController,
      );
if (elector) elector.start();
else startController();

const server = http.createServer(async (req, res) => {
  if (req.url === '/metrics') {
    res.setHeader('Content-Type', registry.contentType);
    res.end(await registry.metrics());
  } else if (req.url === '/healthz' || req.url === '/readyz') {
    res.end('ok\n');
  } else {
    res.statusCode = 404;
    res.end();
  }
});
server.listen(metricsPort, () => log.info({ metricsPort, leaderElect: elector !== null }, 'sipha operator running'));

const shutdown = async (signal: string) => {
  log.info({ signal }, 'shutting down');
  await elector?.stop();
  stopController();
  server.close();
  setTimeout(() => process.exit(0), 100).unref();
};
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
