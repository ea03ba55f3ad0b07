/**
 * sipha sidecar: the data plane that sits in front of the local SIP server.
 * Configured by environment variables (see config.ts and docs/sidecar.md).
 */

import { lookup } from 'node:dns/promises';
import { loadConfig } from './config.ts';
import { HaNode } from './ha/ha-node.ts';
import { startHttp } from './http.ts';
import { createLogger } from './log.ts';
import { createMetrics } from './metrics.ts';
import { EdgeProxy } from './proxy/edge-proxy.ts';
import { EgressDigest } from './proxy/egress-digest.ts';
import type { FlowTls } from './proxy/tcp-flows.ts';
import { TlsCredentials } from './tls/credentials.ts';
import { ArpAnnouncer } from './vip/arp.ts';
import { LabelAnnouncer } from './vip/label.ts';
import type { ClientFlow } from './vip/tcp-tickle.ts';

/** How long after a role change an arp-mode sidecar reports it on its pod (see where it is used). */
const ARP_REPORT_DELAY_MS = 150;

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
  let tls: FlowTls | null = null;
  if (config.tls) {
    try {
      tls = { settings: config.tls, credentials: new TlsCredentials(config.tls, log.child({ room: 'tls' })) };
    } catch (err) {
      console.error(`sipha-sidecar: ${(err as Error).message}`);
      process.exit(2);
    }
    tls.credentials.onReload = (result) => metrics.tlsReloads.inc({ result });
  }
  // In a pair the public address is the VIP: only the serving master binds it.
  const proxy = new EdgeProxy(
    // arp: only the serving master binds the VIP. LB modes: the Service forwards to the pod's own address.
    {
      ...config,
      tls,
      ...(config.ha ? { publicAddress: config.ha.vipMode === 'arp' ? config.ha.vip : config.ha.nodeAddress } : {}),
    },
    log.child({ room: 'edge' }),
    metrics,
  );
  // A renewed certificate (the kubelet rewrote the Secret's files) serves from the next handshake on.
  tls?.credentials.start(() => proxy.tlsServer);
  if (process.env.SIPHA_EGRESS_DIGEST_FILE) proxy.digest = new EgressDigest(process.env.SIPHA_EGRESS_DIGEST_FILE);
  let ha: HaNode | null = null;
  if (config.ha) {
    // The peer may be a DNS name (the peers Service): resolve it before starting,
    // and again whenever the peer goes silent (HaNode.resolvePeer).
    const peerName = config.ha.peerAddress;
    const byName = !/^[0-9.]+$/.test(peerName);
    const resolvePeer = async () => (await lookup(peerName, { family: 4 })).address;
    let peerAddress = peerName;
    for (let i = 0; byName && peerAddress === peerName; i++) {
      try {
        peerAddress = await resolvePeer();
      } catch (err) {
        if (i % 20 === 0) log.warn({ peer: peerName, err }, 'peer not resolvable yet');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    ha = new HaNode(
      { ...config.ha, peerAddress, tcpFlows: { max: config.tcpLimits.maxFlows, idleMs: config.tcpLimits.idleMs } },
      proxy,
      config.ha.vipMode === 'arp'
        ? new ArpAnnouncer(config.ha.vip, config.ha.vipInterface, log.child({ room: 'vip' }))
        : new LabelAnnouncer(config.ha.vipMode, log.child({ room: 'vip' })),
      log.child({ room: 'ha' }),
      metrics,
    );
    if (byName) ha.resolvePeer = resolvePeer;
    if (config.ha.vipMode === 'arp') {
      // The old master's TCP clients learn at takeover that their connections died with it.
      const { tickleFlows } = await import('./vip/tcp-tickle.ts');
      const vipLog = log.child({ room: 'vip' });
      const { vip } = config.ha;
      const tickle = (port: number, flows: ClientFlow[]) =>
        void tickleFlows(vip, port, flows, vipLog).then(({ sent, failed }) => {
          metrics.tcpTickles.inc({ result: 'sent' }, sent);
          metrics.tcpTickles.inc({ result: 'failed' }, failed);
          vipLog.info(
            { flows: flows.length, port, sent, failed },
            "told the old master's TCP clients their connections are gone",
          );
        });
      // Each from the port its client connected to: TLS clients came to the TLS port.
      ha.tickle = (flows) => {
        const overTls = flows.filter((f) => f.tls);
        if (overTls.length < flows.length) tickle(config.sipPort, overTls.length ? flows.filter((f) => !f.tls) : flows);
        if (overTls.length && config.tls) tickle(config.tls.port, overTls);
      };
    }
    if (config.ha.keyDir !== null) {
      // The kubelet rewrites the mounted key files when the operator rotates the key.
      const { KeyDirWatch } = await import('./ha/keyring.ts');
      const node = ha;
      new KeyDirWatch(config.ha.keyDir, config.ha.keys, (k) => node.setKeys(k), log.child({ room: 'keys' })).start();
    }
    const w = config.ha.witness;
    if (w?.kind === 'udp') {
      const { UdpWitness } = await import('./ha/witness-udp.ts');
      ha.witness = await UdpWitness.open({
        key: config.ha.keys.sign,
        witnessKey: config.ha.keys.witness,
        ordinal: config.ha.ordinal,
        address: w.address,
        port: w.port,
        ttlMs: w.ttlMs,
        bindAddress: config.ha.nodeAddress,
      });
    }
    metrics.ha(() => ({
      role: ha?.state.role ?? 'starting',
      term: ha?.state.term ?? 0,
      lag: ha?.replicationLag ?? 0,
      applied: ha?.appliedSeq ?? 0,
      lagMs: (ps: readonly number[]) => ha?.lagMs(ps) ?? ps.map(() => Number.NaN),
      takeovers: ha?.takeovers ?? 0,
      inSync: ha?.inSync ?? false,
      cache: ha?.cacheStats ?? { entries: 0, pending: 0, refused: 0 },
    }));
    const pod = process.env.SIPHA_POD_NAME;
    const namespace = process.env.SIPHA_POD_NAMESPACE;
    if (pod && namespace && process.env.KUBERNETES_SERVICE_HOST) {
      // In a cluster: say our role on our pod (the VIP Service selects it), obey fencing
      // and never reuse a term. Loaded only here: client-node is ~40 MB of heap (source and
      // code) that a sidecar outside Kubernetes never needs, and every major GC walks the heap.
      const k8s = await import('@kubernetes/client-node');
      const { RoleReporter } = await import('./kube/role-reporter.ts');
      const { FencingWatch } = await import('./kube/fencing-watch.ts');
      const { readPairTerm } = await import('./kube/term-seed.ts');
      const kc = new k8s.KubeConfig();
      kc.loadFromCluster();
      const kubeLog = log.child({ room: 'kube' });
      const node = ha;
      // The reporter keeps the latest report and retries it until it lands; it never throws.
      const reporter = new RoleReporter(kc, namespace, pod, {
        failed: (r, err, attempt) =>
          kubeLog.warn({ err, role: r.role, term: r.term, attempt }, 'could not report the role on the pod; retrying'),
        overwritten: (label, r) =>
          kubeLog.warn(
            { label, role: r.role, term: r.term },
            'another writer changed the role label on the pod; reporting again',
          ),
      });
      const { withTakeoverRegistrations } = await import('./kube/takeover-registrations.ts');
      // The state cache holds one entry per accepted registration: what a new master took over.
      // arp mode: the label is for people and the operator, not the data path, and a role
      // change's report (an API write, then the operator's reconcile) is CPU on the node at
      // the moment the new master's first packets need it: report a little after. LB modes:
      // the label moves the Service, at once.
      const later = config.ha.vipMode === 'arp' ? ARP_REPORT_DELAY_MS : 0;
      node.report = withTakeoverRegistrations(
        (r) => (later > 0 ? setTimeout(() => reporter.report(r), later).unref() : reporter.report(r)),
        () => node.cacheStats.entries,
      );
      new FencingWatch(
        kc,
        namespace,
        pod,
        {
          fenced: (term) => node.fenced(term),
          handover: (term) => void node.handover(term),
          roleLabel: (role) => reporter.observedLabel(role),
        },
        kubeLog,
      ).start();
      // Terms recorded before a restart of both sidecars (bounded wait: the SIP service must start).
      const seed = await readPairTerm(kc, namespace, pod, {
        failed: (source, err) => kubeLog.info({ err, source }, 'recorded term not read yet'),
      });
      if (seed.missing.length > 0)
        kubeLog.warn({ missing: seed.missing, term: seed.term }, 'starting without every recorded term');
      node.seedTerm(seed.term);
      if (w?.kind === 'lease') {
        const { LeaseWitness } = await import('./kube/lease-witness.ts');
        const pair = pod.replace(/-[01]$/, '');
        const lease = new LeaseWitness({ kc, namespace, pair, pod, ordinal: config.ha.ordinal, ttlMs: w.ttlMs });
        // Seeing each write as it happens: a takeover from a silent holder needs no wait of a full duration.
        lease.follow(kubeLog);
        node.witness = lease;
      }
    } else if (w?.kind === 'lease') {
      log.fatal('SIPHA_WITNESS=lease needs a pod (SIPHA_POD_NAME, SIPHA_POD_NAMESPACE, in-cluster credentials)');
      process.exit(2);
    }
    await ha.start();
  } else {
    await proxy.start();
  }
  const node = ha;
  const http = await startHttp(
    config.httpPort,
    metrics.registry,
    node
      ? // In a pair, ready means useful: serving, or a backup that holds the master's state
        // (a rolling upgrade waits for exactly this before it switches over).
        { notReady: () => node.notReady(), switchover: () => node.switchover() }
      : { notReady: () => (proxy.serverReady ? null : 'no link to the SIP server') },
  );
  const stop = async (signal: string) => {
    log.info({ signal }, 'stopping');
    // A master that is asked to stop (pod deleted, drained, upgraded) hands over first.
    if (node?.state.role === 'master') {
      const r = await node.switchover();
      log.info(r, r.ok ? 'handed over before stopping' : 'stopping without a handover');
    }
    await ha?.stop();
    proxy.close();
    http.close();
    setTimeout(() => process.exit(0), 50).unref();
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  console.error(`sipha-sidecar: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
