/**
 * Whether what spec.tls names is there and usable, before any pod is asked to
 * mount it: the Secrets exist, are kubernetes.io/tls, hold a certificate and
 * the key that matches it; client authentication has a CA to check against;
 * the outbound CA bundle exists and parses. Pure: the reconciler reads the
 * objects (tlsRefs) and passes them in. The verdict becomes the TLSReady
 * condition; while it is not ok, the StatefulSet is not applied (desired.ts
 * appliedObjects), so a broken TLS setting rolls no pod.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import type { CaBundleRef, TlsSpec } from '../../contract/siphapair.ts';
import { TLS_CA_ENTRY, TLS_CERT_ENTRY, TLS_KEY_ENTRY } from '../../contract/tls-settings.ts';
import { clientAuthOf, tlsPort } from './tls-pod.ts';

export type TlsReason = 'TLSSecretValid' | 'TLSSecretMissing' | 'TLSSecretInvalid' | 'TLSSecretUnreadable';
export interface TlsVerdict {
  ok: boolean;
  reason: TlsReason;
  message: string;
}

/** What the reconciler read; null: not found. */
export interface TlsObjects {
  secrets: Map<string, V1Secret | null>;
  configMaps: Map<string, V1ConfigMap | null>;
}

const TLS_TYPE = 'kubernetes.io/tls';

/** The Secrets and ConfigMaps spec.tls names, each once. */
export function tlsRefs(tls: TlsSpec): { secrets: string[]; configMaps: string[] } {
  const secrets = new Set([tls.secretName, ...(tls.sni ?? []).map((e) => e.secretName)]);
  const configMaps = new Set<string>();
  for (const ref of caRefs(tls)) (ref.kind === 'Secret' ? secrets : configMaps).add(ref.name);
  return { secrets: [...secrets], configMaps: [...configMaps] };
}

function caRefs(tls: TlsSpec): CaBundleRef[] {
  const client = clientAuthOf(tls) !== 'none' ? tls.clientCA : undefined;
  return [...(client ? [client] : []), ...(tls.outboundCA ? [tls.outboundCA] : [])];
}

type Problem = { reason: 'TLSSecretMissing' | 'TLSSecretInvalid'; text: string };
const missing = (text: string): Problem => ({ reason: 'TLSSecretMissing', text });
const invalid = (text: string): Problem => ({ reason: 'TLSSecretInvalid', text });

const secretEntry = (s: V1Secret, key: string): Buffer | undefined =>
  s.data?.[key] !== undefined ? Buffer.from(s.data[key], 'base64') : undefined;

/** A parse error's first line, without Node's error code noise. */
const why = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0];

function certificate(pem: Buffer, what: string): Problem | null {
  try {
    new X509Certificate(pem);
    return null;
  } catch (err) {
    return invalid(`${what} is not a PEM certificate (${why(err)})`);
  }
}

/** A kubernetes.io/tls Secret whose tls.key is the key of its tls.crt. */
function keyPair(name: string, s: V1Secret | null | undefined, what: string): Problem | null {
  if (!s) return missing(`${what}: Secret ${name} not found`);
  if (s.type !== TLS_TYPE) return invalid(`${what}: Secret ${name} is of type ${s.type ?? '(none)'}, not ${TLS_TYPE}`);
  const crt = secretEntry(s, TLS_CERT_ENTRY);
  const key = secretEntry(s, TLS_KEY_ENTRY);
  const absent = [crt ? null : TLS_CERT_ENTRY, key ? null : TLS_KEY_ENTRY].filter((e) => e !== null);
  if (!crt || !key || crt.length === 0 || key.length === 0) {
    return invalid(`${what}: Secret ${name} has no ${absent.join(' or ') || `${TLS_CERT_ENTRY} or ${TLS_KEY_ENTRY} content`}`);
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(crt);
  } catch (err) {
    return invalid(`${what}: ${TLS_CERT_ENTRY} of Secret ${name} is not a PEM certificate (${why(err)})`);
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(key))) {
      return invalid(`${what}: ${TLS_KEY_ENTRY} of Secret ${name} is not the key of its ${TLS_CERT_ENTRY}`);
    }
  } catch (err) {
    return invalid(`${what}: ${TLS_KEY_ENTRY} of Secret ${name} is not a PEM private key (${why(err)})`);
  }
  return null;
}

/** ca.crt of a ConfigMap or Secret (for a Secret of any type: a CA bundle is not a key pair). */
function caBundle(ref: CaBundleRef, found: TlsObjects, what: string): Problem | null {
  const label = `${ref.kind} ${ref.name}`;
  let pem: Buffer | undefined;
  if (ref.kind === 'Secret') {
    const s = found.secrets.get(ref.name);
    if (!s) return missing(`${what}: ${label} not found`);
    pem = secretEntry(s, TLS_CA_ENTRY);
  } else {
    const c = found.configMaps.get(ref.name);
    if (!c) return missing(`${what}: ${label} not found`);
    const text = c.data?.[TLS_CA_ENTRY];
    const bin = c.binaryData?.[TLS_CA_ENTRY];
    pem = text !== undefined ? Buffer.from(text) : bin !== undefined ? Buffer.from(bin, 'base64') : undefined;
  }
  if (!pem || pem.length === 0) return invalid(`${what}: ${label} has no ${TLS_CA_ENTRY}`);
  return certificate(pem, `${what}: ${TLS_CA_ENTRY} of ${label}`);
}

export function tlsVerdict(tls: TlsSpec, found: TlsObjects): TlsVerdict {
  const problems: Problem[] = [];
  const add = (p: Problem | null) => {
    if (p) problems.push(p);
  };
  const main = found.secrets.get(tls.secretName);
  add(keyPair(tls.secretName, main, 'tls.secretName'));
  const auth = clientAuthOf(tls);
  if (auth !== 'none') {
    const what = `clientAuth ${tls.clientAuth}`;
    if (tls.clientCA) add(caBundle(tls.clientCA, found, `${what} (tls.clientCA)`));
    else if (main) {
      // Checked only when the Secret is there: its absence is said once, above.
      const ca = secretEntry(main, TLS_CA_ENTRY);
      add(
        ca && ca.length > 0
          ? certificate(ca, `${what}: ${TLS_CA_ENTRY} of Secret ${tls.secretName}`)
          : invalid(
              `${what} checks client certificates against a CA: Secret ${tls.secretName} has no ${TLS_CA_ENTRY} (add one, or name a bundle in tls.clientCA)`,
            ),
      );
    }
  }
  for (const e of tls.sni ?? []) add(keyPair(e.secretName, found.secrets.get(e.secretName), `tls.sni ${e.serverName}`));
  if (tls.outboundCA) add(caBundle(tls.outboundCA, found, 'tls.outboundCA'));

  if (problems.length > 0) {
    return {
      ok: false,
      reason: (problems[0] as Problem).reason,
      message: `${problems.map((p) => p.text).join('; ')}: the pods are not changed until this is fixed`,
    };
  }
  const sni = tls.sni?.length ?? 0;
  return {
    ok: true,
    reason: 'TLSSecretValid',
    message: [
      `SIP over TLS on port ${tlsPort(tls)} with Secret ${tls.secretName}`,
      auth === 'none'
        ? 'no client certificates asked'
        : `client certificates ${auth === 'require' ? 'required' : 'checked if sent'}`,
      ...(sni > 0 ? [`${sni} more certificate${sni === 1 ? '' : 's'} by SNI`] : []),
      ...(tls.outboundCA ? [`next hops verified against ${tls.outboundCA.kind} ${tls.outboundCA.name}`] : []),
    ].join('; '),
  };
}

/** A Secret or ConfigMap that could not be read (not a 404: RBAC, the API server). */
export function unreadable(kind: string, name: string, error: string): TlsVerdict {
  return {
    ok: false,
    reason: 'TLSSecretUnreadable',
    message: `could not read ${kind} ${name} to check spec.tls (${error}): the pods are not changed until it can be read`,
  };
}
