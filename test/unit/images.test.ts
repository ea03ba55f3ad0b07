/**
 * hack/images.sh builds the images without Docker; the Dockerfiles describe the same
 * images for Docker users. Both are read as text here: entrypoint, command, workdir,
 * user, the Debian packages on top of the base, and the names the chart and CRD pull.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), 'utf8');

const script = read('hack/images.sh');
const version = (JSON.parse(read('package.json')) as { version: string }).version;

/** A bash array `NAME=(a b c)` or scalar `NAME=value` from hack/images.sh, as words. */
function shellWords(text: string, name: string): string[] {
  const array = new RegExp(`^${name}=\\(([^)]*)\\)$`, 'm').exec(text);
  if (array) return (array[1] ?? '').split(/\s+/).filter(Boolean);
  const scalar = new RegExp(`^${name}=(\\S*)$`, 'm').exec(text);
  assert.ok(scalar, `hack/images.sh sets ${name}`);
  return scalar[1] ? [scalar[1]] : [];
}

interface DockerImage {
  from: string;
  entrypoint: string[];
  cmd: string[];
  workdir: string;
  user: string;
  packages: string[];
}

/** What a Dockerfile says about the image (JSON-form ENTRYPOINT/CMD only, as ours use). */
function parseDockerfile(text: string): DockerImage {
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  const last = (instr: string) =>
    lines
      .filter((l) => l.startsWith(`${instr} `))
      .map((l) => l.slice(instr.length + 1).trim())
      .at(-1);
  const json = (instr: string) => {
    const v = last(instr);
    return v === undefined ? [] : (JSON.parse(v) as string[]);
  };
  const packages: string[] = [];
  for (const l of lines.filter((l) => l.startsWith('RUN '))) {
    for (const m of l.matchAll(/apt-get install((?:\s+[^\s&;|]+)+)/g)) {
      packages.push(...(m[1] ?? '').split(/\s+/).filter((w) => w && !w.startsWith('-')));
    }
  }
  return {
    from: last('FROM') ?? '',
    entrypoint: json('ENTRYPOINT'),
    cmd: json('CMD'),
    workdir: last('WORKDIR') ?? '',
    user: last('USER') ?? '',
    packages: packages.sort(),
  };
}

/** What hack/images.sh says about one image (PREFIX is OPERATOR, SIDECAR or KAMAILIO). */
function scriptImage(text: string, prefix: string) {
  const one = (field: string) => shellWords(text, `${prefix}_${field}`)[0] ?? '';
  return {
    entrypoint: shellWords(text, `${prefix}_ENTRYPOINT`),
    cmd: shellWords(text, `${prefix}_CMD`),
    workdir: one('WORKDIR'),
    user: one('USER'),
    packages: shellWords(text, `${prefix}_PACKAGES`).sort(),
  };
}

const images = [
  { prefix: 'OPERATOR', dockerfile: 'operator/Dockerfile', base: /^node:(\d+)-bookworm-slim$/ },
  { prefix: 'SIDECAR', dockerfile: 'sidecar/Dockerfile', base: /^node:(\d+)-bookworm-slim$/ },
  { prefix: 'KAMAILIO', dockerfile: 'images/kamailio/Dockerfile', base: /^debian:bookworm-slim$/ },
];

describe('images: hack/images.sh and the Dockerfiles build the same images', () => {
  for (const { prefix, dockerfile, base } of images) {
    it(`${dockerfile}: entrypoint, command, workdir, user and Debian packages as hack/images.sh`, () => {
      const docker = parseDockerfile(read(dockerfile));
      const { from, ...rest } = docker;
      assert.deepEqual(rest, scriptImage(script, prefix));
      const m = base.exec(from);
      assert.ok(m, `${dockerfile} FROM ${from}`);
      // The Node base image has the major version hack/images.sh copies in (hack/env.sh).
      if (m[1]) assert.equal(m[1], /SIPHA_NODE_VERSION="\$\{SIPHA_NODE_VERSION:-(\d+)\./.exec(read('hack/env.sh'))?.[1]);
    });
  }

  it('builds on the Debian release the Dockerfiles start from', () => {
    assert.deepEqual(shellWords(script, 'SUITE'), ['bookworm']);
  });

  it('names the images as the chart and the CRD pull them', () => {
    const kamailio = shellWords(script, 'KAMAILIO_VERSION')[0] ?? '';
    const ref = (prefix: string) =>
      (shellWords(script, `${prefix}_REF`)[0] ?? '').replace('$VERSION', version).replace('$KAMAILIO_VERSION', kamailio);
    const values = read('charts/sipha/values.yaml');
    const repo = /^ {2}repository: (\S+)$/m.exec(values)?.[1];
    const tag = /^ {2}tag: "([^"]+)"$/m.exec(values)?.[1];
    assert.equal(ref('OPERATOR'), `docker.io/${repo}:${tag}`);
    const crdDefault = /image: \{[^}]*default: "(sipha\/sidecar:[^"]+)"/.exec(read('crds/siphapair.yaml'))?.[1];
    assert.equal(ref('SIDECAR'), `docker.io/${crdDefault}`);
    assert.equal(ref('KAMAILIO'), 'docker.io/sipha/kamailio:5.6.3');
    for (const [prefix, dockerfile] of [
      ['OPERATOR', 'operator/Dockerfile'],
      ['SIDECAR', 'sidecar/Dockerfile'],
      ['KAMAILIO', 'images/kamailio/Dockerfile'],
    ] as const) {
      const tagged = /docker build -f \S+ -t (\S+) \./.exec(read(dockerfile))?.[1];
      assert.equal(`docker.io/${tagged}`, ref(prefix), `${dockerfile}'s build line`);
    }
  });

  it('reads what it compares (a changed side fails the comparison)', () => {
    const docker = parseDockerfile(read('sidecar/Dockerfile'));
    assert.deepEqual(docker.packages, ['conntrack', 'iproute2', 'iputils-arping', 'nftables']);
    const changed = parseDockerfile(
      read('sidecar/Dockerfile').replace('iputils-arping', 'iputils-arping tcpdump').replace('WORKDIR /app', 'WORKDIR /srv'),
    );
    assert.notDeepEqual(changed.packages, scriptImage(script, 'SIDECAR').packages);
    assert.notEqual(changed.workdir, scriptImage(script, 'SIDECAR').workdir);
    const otherUser = scriptImage(script.replace(/^OPERATOR_USER=.*$/m, 'OPERATOR_USER=0:0'), 'OPERATOR');
    assert.notEqual(otherUser.user, parseDockerfile(read('operator/Dockerfile')).user);
  });
});
