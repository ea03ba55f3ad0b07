/**
 * What spec.tls adds to the pair's pod (contract/tls-settings.ts): the Secrets
 * and CA bundles as read-only directory volumes, the sidecar's SIPHA_TLS_*
 * environment, the sip-tls port. Pure; desired.ts puts the pieces in place.
 *
 * Every volume is mounted whole, never with subPath: the kubelet then swaps
 * the files in place when a Secret or ConfigMap changes (a renewed
 * certificate), and the sidecar re-reads them. The certificates' content is
 * never part of the pod template, so a renewal rolls no pod; a change of
 * spec.tls changes the template and rolls the pair as any spec change does
 * (upgrade.ts).
 */
import { dirname } from 'node:path';
import type { CaBundleRef, SipHaPairSpec, TlsSpec } from '../../contract/siphapair.ts';
import {
  DEFAULT_TLS_PORT,
  TLS_CA_ENTRY,
  TLS_CERT_ENTRY,
  TLS_CLIENT_AUTH_ENV,
  TLS_DIR_ENV,
  TLS_KEY_ENTRY,
  TLS_MOUNT_DIR,
  TLS_OUTBOUND_CA_ENV,
  TLS_OUTBOUND_CA_FILE,
  TLS_PORT_ENV,
  TLS_SNI_ENV,
  type TlsClientAuth,
  tlsSniMountDir,
} from '../../contract/tls-settings.ts';

type Env = { name: string; value: string };
type Mount = { name: string; mountPath: string; readOnly: true };
type Volume = Record<string, unknown> & { name: string };

export interface TlsPod {
  volumes: Volume[];
  sidecarMounts: Mount[];
  sidecarEnv: Env[];
  /** The SIP server records routes with the TLS port (Record-Route, Path). */
  serverEnv: Env[];
  port: { name: 'sip-tls'; containerPort: number; protocol: 'TCP' };
}

const TLS_VOLUME = 'sipha-tls';
const OUTBOUND_CA_VOLUME = 'sipha-tls-outbound-ca';
const sniVolume = (n: number) => `sipha-tls-sni-${n}`;
/** Read by the sidecar alone, as the pair key is (desired.ts KEY_VOLUME). */
const MODE = 0o400;

export const tlsPort = (tls: TlsSpec): number => tls.port ?? DEFAULT_TLS_PORT;
export const clientAuthOf = (tls: TlsSpec): TlsClientAuth => (tls.clientAuth ?? 'None').toLowerCase() as TlsClientAuth;

/** ca.crt of a ConfigMap or Secret, as one volume source (items: nothing else of it is read). */
function caSource(ref: CaBundleRef): Record<string, unknown> {
  const items = [{ key: TLS_CA_ENTRY, path: TLS_CA_ENTRY }];
  return ref.kind === 'Secret' ? { secret: { name: ref.name, items } } : { configMap: { name: ref.name, items } };
}

/**
 * The main TLS directory: the whole Secret; with clientCA, a projected volume of the
 * Secret's certificate and key and that bundle's ca.crt (a trunk's CA is rarely the
 * issuer of one's own certificate, and cert-manager owns the Secret's ca.crt).
 */
function mainVolume(tls: TlsSpec): Volume {
  if (!tls.clientCA || clientAuthOf(tls) === 'none') {
    return { name: TLS_VOLUME, secret: { secretName: tls.secretName, defaultMode: MODE } };
  }
  const items = [TLS_CERT_ENTRY, TLS_KEY_ENTRY].map((key) => ({ key, path: key }));
  return {
    name: TLS_VOLUME,
    projected: { defaultMode: MODE, sources: [{ secret: { name: tls.secretName, items } }, caSource(tls.clientCA)] },
  };
}

export function tlsPod(s: SipHaPairSpec): TlsPod | null {
  const tls = s.tls;
  if (!tls) return null;
  const port = tlsPort(tls);
  const sni = tls.sni ?? [];
  const volumes: Volume[] = [mainVolume(tls)];
  const sidecarMounts: Mount[] = [{ name: TLS_VOLUME, mountPath: TLS_MOUNT_DIR, readOnly: true }];
  sni.forEach((e, n) => {
    volumes.push({ name: sniVolume(n), secret: { secretName: e.secretName, defaultMode: MODE } });
    sidecarMounts.push({ name: sniVolume(n), mountPath: tlsSniMountDir(n), readOnly: true });
  });
  if (tls.outboundCA) {
    volumes.push({ name: OUTBOUND_CA_VOLUME, projected: { defaultMode: MODE, sources: [caSource(tls.outboundCA)] } });
    sidecarMounts.push({ name: OUTBOUND_CA_VOLUME, mountPath: dirname(TLS_OUTBOUND_CA_FILE), readOnly: true });
  }
  const sidecarEnv: Env[] = [
    { name: TLS_DIR_ENV, value: TLS_MOUNT_DIR },
    { name: TLS_PORT_ENV, value: String(port) },
    { name: TLS_CLIENT_AUTH_ENV, value: clientAuthOf(tls) },
    ...(sni.length > 0
      ? [{ name: TLS_SNI_ENV, value: sni.map((e, n) => `${e.serverName}=${tlsSniMountDir(n)}`).join(',') }]
      : []),
    ...(tls.outboundCA ? [{ name: TLS_OUTBOUND_CA_ENV, value: TLS_OUTBOUND_CA_FILE }] : []),
  ];
  return {
    volumes,
    sidecarMounts,
    sidecarEnv,
    serverEnv: [{ name: TLS_PORT_ENV, value: String(port) }],
    port: { name: 'sip-tls', containerPort: port, protocol: 'TCP' },
  };
}
