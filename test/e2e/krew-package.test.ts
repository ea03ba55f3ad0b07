/**
 * `kubectl sipha` as krew ships it (issue 11 item 4): hack/krew-package.sh
 * builds the archive and fills the manifest; krew's own checker
 * (validate-krew-manifest, built from sigs.k8s.io/krew by hack/build-krew.sh)
 * validates the manifest and installs it from a loopback HTTP server; then
 * `kubectl krew install --archive` installs it as a user would, and the
 * installed plugin runs through kubectl from outside the repository (its
 * dependencies come from the archive, not from the repo's node_modules).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { k8sBinDir } from '../lib/control-plane.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const VERSION = `v${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}`;
const ARCHIVE = `kubectl-sipha-${VERSION}.tar.gz`;

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    version: string;
    shortDescription: string;
    platforms: Array<{ uri: string; sha256: string; bin: string; selector: unknown }>;
  };
}

describe('kubectl sipha packaged for krew', { timeout: 600_000 }, () => {
  let work: string;
  let server: Server;
  let krewBin: string;
  let path: string;
  let manifest: Manifest;

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'sipha-krew-'));
    krewBin = execFileSync('bash', [join(ROOT, 'hack/build-krew.sh')], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .pop() as string;
    // kubectl (for `kubectl krew`), krew, and the Node that runs the tests (Node 24) first.
    path = [krewBin, k8sBinDir(), dirname(process.execPath), process.env.PATH].join(delimiter);
    server = createServer((req, res) => {
      if (req.url !== `/${ARCHIVE}`) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/gzip' });
      createReadStream(join(work, 'dist', ARCHIVE)).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const uri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/${ARCHIVE}`;
    execFileSync('bash', [join(ROOT, 'hack/krew-package.sh'), uri], {
      env: { ...process.env, SIPHA_DIST: join(work, 'dist') },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    manifest = k8s.loadYaml<Manifest>(readFileSync(join(work, 'dist', 'sipha.yaml'), 'utf8'));
  });

  after(async () => {
    await new Promise((r) => server?.close(r));
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('fills the manifest for this version, with the sha256 of the archive built', () => {
    assert.equal(manifest.apiVersion, 'krew.googlecontainertools.github.com/v1alpha2');
    assert.equal(manifest.kind, 'Plugin');
    assert.equal(manifest.metadata.name, 'sipha');
    assert.equal(manifest.spec.version, VERSION);
    const [platform] = manifest.spec.platforms;
    assert.ok(platform);
    assert.equal(platform.bin, 'cli/kubectl-sipha');
    const sha = createHash('sha256')
      .update(readFileSync(join(work, 'dist', ARCHIVE)))
      .digest('hex');
    assert.equal(platform.sha256, sha);
    assert.doesNotMatch(readFileSync(join(work, 'dist', 'sipha.yaml'), 'utf8'), /@[A-Z0-9]+@/, 'every placeholder filled');
  });

  it("krew's own checker validates the manifest and installs the archive from its uri", async () => {
    // Asynchronous: the archive is served from this process while the checker downloads it.
    const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(join(krewBin, 'validate-krew-manifest'), ['-manifest', join(work, 'dist', 'sipha.yaml')], {
        env: { ...process.env, PATH: path, KREW_ROOT: join(work, 'krew-validate') },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d;
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, err });
      });
    });
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /structural validation OK/);
    assert.match(r.err, /all 1 spec\.platforms installed fine/);
  });

  it('installs with kubectl krew, and the installed plugin runs through kubectl outside the repository', () => {
    const env = { ...process.env, KREW_ROOT: join(work, 'krew'), KUBECONFIG: join(work, 'no-kubeconfig') };
    const install = spawnSync(
      'kubectl',
      ['krew', 'install', `--manifest=${join(work, 'dist', 'sipha.yaml')}`, `--archive=${join(work, 'dist', ARCHIVE)}`],
      { env: { ...env, PATH: path }, encoding: 'utf8', cwd: work },
    );
    assert.equal(install.status, 0, install.stderr);
    const userPath = [join(work, 'krew', 'bin'), path].join(delimiter);
    const help = spawnSync('kubectl', ['sipha', '--help'], { env: { ...env, PATH: userPath }, encoding: 'utf8', cwd: tmpdir() });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /kubectl sipha history NAME/);
    // It reaches client-node from the archive: a missing kubeconfig is reported as such.
    const st = spawnSync('kubectl', ['sipha', 'status', '--kubeconfig', join(work, 'absent')], {
      env: { ...env, PATH: userPath },
      encoding: 'utf8',
      cwd: tmpdir(),
    });
    assert.equal(st.status, 1);
    assert.match(st.stderr, /^error: ENOENT: no such file or directory, open '.*absent'$/m);
    // krew's receipt of the install (`krew list` needs the index, which needs the network).
    const receipt = k8s.loadYaml<Manifest>(readFileSync(join(work, 'krew', 'receipts', 'sipha.yaml'), 'utf8'));
    assert.equal(receipt.spec.version, VERSION);
  });
});
