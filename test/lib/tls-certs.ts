/**
 * Throwaway certificates for TLS tests and benchmarks, made with openssl: one
 * CA, and leaf certificates it signs, each written as a kubernetes.io/tls
 * directory (tls.crt, tls.key, ca.crt) as the operator mounts the Secret.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface TestCa {
  readonly dir: string;
  readonly certFile: string;
  readonly cert: string;
  /** A leaf for `names` (DNS names or IP addresses), as a Secret-like directory. */
  issue(name: string, names: string[], opts?: { client?: boolean }): TlsDir;
}

export interface TlsDir {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A CA in `dir` (EC P-256: small and fast to make). A directory it creates is
 * removed when the process exits (the processes given the files are gone by then).
 */
export function makeTestCa(dir: string, subject = 'sipha test CA'): TestCa {
  if (!existsSync(dir)) process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'ca.key');
  const certFile = path.join(dir, 'ca.crt');
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
  openssl(['req', '-x509', '-new', '-key', key, '-sha256', '-days', '2', '-subj', `/CN=${subject}`, '-out', certFile], dir);
  const cert = readFileSync(certFile, 'utf8');
  let serial = 1;
  return {
    dir,
    certFile,
    cert,
    issue(name, names, opts = {}) {
      const out = path.join(dir, name);
      mkdirSync(out, { recursive: true });
      const leafKey = path.join(out, 'tls.key');
      const csr = path.join(out, 'req.csr');
      const ext = path.join(out, 'ext.cnf');
      const san = names.map((n) => (IPV4.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      writeFileSync(
        ext,
        [
          `subjectAltName=${san}`,
          'basicConstraints=CA:FALSE',
          'keyUsage=digitalSignature,keyEncipherment',
          `extendedKeyUsage=${opts.client ? 'clientAuth' : 'serverAuth,clientAuth'}`,
          '',
        ].join('\n'),
      );
      openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', leafKey], out);
      openssl(['req', '-new', '-key', leafKey, '-subj', `/CN=${names[0] ?? name}`, '-out', csr], out);
      openssl(
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          certFile,
          '-CAkey',
          key,
          '-set_serial',
          String(serial++),
          '-days',
          '2',
          '-sha256',
          '-extfile',
          ext,
          '-out',
          path.join(out, 'tls.crt'),
        ],
        out,
      );
      writeFileSync(path.join(out, 'ca.crt'), cert);
      return {
        dir: out,
        cert: readFileSync(path.join(out, 'tls.crt'), 'utf8'),
        key: readFileSync(leafKey, 'utf8'),
        ca: cert,
      };
    },
  };
}
