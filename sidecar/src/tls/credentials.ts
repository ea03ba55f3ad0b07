/**
 * The certificates the sidecar serves SIP over TLS with (contract/tls-settings.ts):
 * a kubernetes.io/tls directory, more chosen by SNI, and the CA that client
 * certificates are checked against. Read again every `everyMs`: the kubelet
 * swaps a Secret volume's files in place when cert-manager renews the
 * certificate, and new handshakes use the new one without a restart. A read
 * that fails (half-written files, a key that does not match) keeps what is in
 * use and says why once.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { TLS_CA_ENTRY, TLS_CERT_ENTRY, TLS_KEY_ENTRY, type TlsClientAuth } from '../../../contract/tls-settings.ts';
import type { Logger } from '../log.ts';

export interface TlsSettings {
  readonly dir: string;
  readonly port: number;
  readonly clientAuth: TlsClientAuth;
  /** Server name (lower case) -> directory. */
  readonly sni: ReadonlyMap<string, string>;
  /** CA bundle file for next hops; null: the system's CAs. */
  readonly outboundCaFile: string | null;
}

/** TLS 1.2 and 1.3 only; in 1.2, forward-secret AEAD suites only (Mozilla "intermediate"). */
const MIN_VERSION = 'TLSv1.2';
const CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

interface Loaded {
  readonly digest: string;
  readonly options: tls.SecureContextOptions;
  readonly context: tls.SecureContext;
}

/** One directory's certificate and key (and CA when client certificates are asked for), as a context. */
function loadDir(dir: string, withCa: boolean): Loaded {
  const cert = readFileSync(join(dir, TLS_CERT_ENTRY));
  const key = readFileSync(join(dir, TLS_KEY_ENTRY));
  const ca = withCa ? readFileSync(join(dir, TLS_CA_ENTRY)) : null;
  // createSecureContext checks that the key matches the certificate.
  const options: tls.SecureContextOptions = {
    cert,
    key,
    ...(ca ? { ca } : {}),
    minVersion: MIN_VERSION,
    ciphers: CIPHERS,
    honorCipherOrder: true,
  };
  const context = tls.createSecureContext(options);
  const digest = createHash('sha256')
    .update(cert)
    .update(key)
    .update(ca ?? '')
    .digest('hex');
  return { digest, options, context };
}

export class TlsCredentials {
  private main: Loaded;
  private readonly byName = new Map<string, Loaded>();
  private readonly settings: TlsSettings;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | null = null;
  private lastError = '';
  /** Called after a reload changed what is served (counted by the caller). */
  onReload: ((result: 'changed' | 'failed') => void) | null = null;

  /** Throws with the file and the reason when the certificates cannot be loaded at start. */
  constructor(settings: TlsSettings, log: Logger) {
    this.settings = settings;
    this.log = log;
    this.main = this.load(settings.dir);
    for (const [name, dir] of settings.sni) this.byName.set(name, this.load(dir));
  }

  private load(dir: string): Loaded {
    try {
      return loadDir(dir, this.settings.clientAuth !== 'none');
    } catch (err) {
      throw new Error(`TLS certificate in ${dir}: ${(err as Error).message}`);
    }
  }

  /** Options for tls.Server: the default context's files, SNI, client certificates. */
  serverOptions(): tls.TlsOptions {
    const ask = this.settings.clientAuth !== 'none';
    return {
      ...this.main.options,
      SNICallback: (name, cb) => cb(null, this.byName.get(name.toLowerCase())?.context ?? this.main.context),
      requestCert: ask,
      // "optional": a client without a certificate is let in; the edge refuses one whose certificate fails.
      rejectUnauthorized: this.settings.clientAuth === 'require',
    };
  }

  start(server: () => tls.Server | null, everyMs = 5000): void {
    this.timer = setInterval(() => this.check(server()), everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Reads every directory again; a changed one is served from the next handshake on. */
  check(server: tls.Server | null): void {
    let main: Loaded;
    const named = new Map<string, Loaded>();
    try {
      main = this.load(this.settings.dir);
      for (const [name, dir] of this.settings.sni) named.set(name, this.load(dir));
    } catch (err) {
      const why = (err as Error).message;
      if (why !== this.lastError) {
        this.log.error({ err: why }, 'TLS certificates unreadable: serving the ones in use');
        this.onReload?.('failed');
      }
      this.lastError = why;
      return;
    }
    this.lastError = '';
    const changed = main.digest !== this.main.digest || [...named].some(([n, l]) => this.byName.get(n)?.digest !== l.digest);
    if (!changed) return;
    this.main = main;
    for (const [n, l] of named) this.byName.set(n, l);
    server?.setSecureContext(main.options);
    this.log.warn({ dir: this.settings.dir }, 'TLS certificates changed: new handshakes use them');
    this.onReload?.('changed');
  }
}

/** Options for connecting to a next hop over TLS: verified against the CA bundle, SNI when it is a name. */
export function clientOptions(settings: TlsSettings | null, host: string): tls.ConnectionOptions {
  const ca = settings?.outboundCaFile ? readFileSync(settings.outboundCaFile) : undefined;
  return {
    ...(ca ? { ca } : {}),
    // RFC 5922: the next hop's certificate must name the host we were sent to (checked by Node).
    rejectUnauthorized: true,
    minVersion: MIN_VERSION,
    ...(/^[0-9.]+$/.test(host) || host.includes(':') ? {} : { servername: host }),
  };
}
