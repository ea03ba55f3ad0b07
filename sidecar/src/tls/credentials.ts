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
import { isIP } from 'node:net';
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

/** One directory's certificate and key, with the CA that client certificates are checked against (if any). */
function loadDir(dir: string, ca: Buffer | null): Loaded {
  const cert = readFileSync(join(dir, TLS_CERT_ENTRY));
  const key = readFileSync(join(dir, TLS_KEY_ENTRY));
  const options: tls.SecureContextOptions = {
    cert,
    key,
    ...(ca ? { ca } : {}),
    minVersion: MIN_VERSION,
    ciphers: CIPHERS,
    honorCipherOrder: true,
  };
  // createSecureContext checks that the key matches the certificate.
  const context = tls.createSecureContext(options);
  const digest = createHash('sha256')
    .update(cert)
    .update(key)
    .update(ca ?? '')
    .digest('hex');
  return { digest, options, context };
}

/** Everything read from the files at one time. */
interface Snapshot {
  main: Loaded;
  byName: Map<string, Loaded>;
  /** The outbound CA bundle; undefined: the system's CAs. */
  outboundCa: Buffer | undefined;
}

export class TlsCredentials {
  private now: Snapshot;
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
    this.now = this.read();
  }

  /**
   * Reads every file. Client certificates are checked against the main
   * directory's ca.crt whichever certificate SNI picks: OpenSSL verifies with
   * the context the SNI callback returns, and an SNI Secret's own ca.crt (its
   * issuer's, or none) is not the CA of the pair's clients.
   */
  private read(): Snapshot {
    const { dir, clientAuth, sni, outboundCaFile } = this.settings;
    const ca = clientAuth === 'none' ? null : inDir(dir, () => readFileSync(join(dir, TLS_CA_ENTRY)));
    const main = inDir(dir, () => loadDir(dir, ca));
    const byName = new Map<string, Loaded>();
    for (const [name, d] of sni)
      byName.set(
        name,
        inDir(d, () => loadDir(d, ca)),
      );
    let outboundCa: Buffer | undefined;
    if (outboundCaFile) {
      try {
        outboundCa = readFileSync(outboundCaFile);
      } catch (err) {
        throw new Error(`TLS outbound CA ${outboundCaFile}: ${(err as Error).message}`);
      }
    }
    return { main, byName, outboundCa };
  }

  /** Options for tls.Server: the default context's files, SNI, client certificates. */
  serverOptions(): tls.TlsOptions {
    const ask = this.settings.clientAuth !== 'none';
    return {
      ...this.now.main.options,
      SNICallback: (name, cb) => cb(null, this.now.byName.get(name.toLowerCase())?.context ?? this.now.main.context),
      requestCert: ask,
      // "optional": a client without a certificate is let in; the edge refuses one whose certificate fails.
      rejectUnauthorized: this.settings.clientAuth === 'require',
    };
  }

  /** Options for connecting to a next hop over TLS: verified against the CA bundle, SNI when it is a name. */
  clientOptions(host: string): tls.ConnectionOptions {
    return {
      ...(this.now.outboundCa ? { ca: this.now.outboundCa } : {}),
      // RFC 5922: the next hop's certificate must name the host we were sent to (checked by Node).
      rejectUnauthorized: true,
      minVersion: MIN_VERSION,
      ciphers: CIPHERS,
      ...(isIP(host) ? {} : { servername: host }),
    };
  }

  start(server: () => tls.Server | null, everyMs = 5000): void {
    this.timer = setInterval(() => this.check(server()), everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Reads every file again; a changed certificate is served from the next handshake on. */
  check(server: tls.Server | null): void {
    let next: Snapshot;
    try {
      next = this.read();
    } catch (err) {
      const why = (err as Error).message;
      if (why !== this.lastError) {
        this.log.error({ err }, 'TLS certificates unreadable: serving the ones in use');
        this.onReload?.('failed');
      }
      this.lastError = why;
      return;
    }
    this.lastError = '';
    const was = this.now;
    const changed =
      next.main.digest !== was.main.digest ||
      [...next.byName].some(([n, l]) => was.byName.get(n)?.digest !== l.digest) ||
      !sameBytes(next.outboundCa, was.outboundCa);
    if (!changed) return;
    this.now = next;
    server?.setSecureContext(next.main.options);
    this.log.warn({ dir: this.settings.dir }, 'TLS certificates changed: new handshakes use them');
    this.onReload?.('changed');
  }
}

/** f(), its failure said with the directory it read. */
function inDir<T>(dir: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    throw new Error(`TLS certificate in ${dir}: ${(err as Error).message}`);
  }
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.equals(b));
}
