/**
 * The baseline a user would pick instead of sipha: keepalived (Debian's)
 * moving the VIP between two plain Kamailio hosts by VRRP, with a track
 * script on Kamailio. keepalived cannot use track_process in a network
 * namespace (FIELD-NOTES), and a script's interval cannot go below 1 s.
 */
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Kamailio, startKamailio } from './kamailio.ts';
import { writeDmqConfig } from './kamailio-dmq.ts';
import type { Host, NetBed } from './netbed.ts';

export interface KeepalivedNode {
  host: Host;
  kamailio: Kamailio;
  keepalived: ChildProcess;
}

export interface KeepalivedTuning {
  /** 'default': VRRPv2, advert_int 1. 'fastest': VRRPv3 with the smallest advert_int keepalived accepts. */
  profile: 'default' | 'fastest';
  /** Kamailio replicates its registrations itself, with dmq + dmq_usrloc (kamailio-dmq.ts). */
  dmq?: boolean;
}

export const FASTEST_ADVERT_S = 0.01;

export async function startKeepalivedPair(
  bed: NetBed,
  a: Host,
  b: Host,
  vip: string,
  t: KeepalivedTuning,
): Promise<[KeepalivedNode, KeepalivedNode]> {
  const start = async (host: Host, peer: Host, priority: number): Promise<KeepalivedNode> => {
    // Kamailio binds the VIP even while it is not on this host.
    execFileSync('ip', ['netns', 'exec', host.ns, 'sysctl', '-qw', 'net.ipv4.ip_nonlocal_bind=1']);
    const dir = bed.subdir(`keepalived-${host.name}`);
    const cfg = t.dmq ? writeDmqConfig(dir, host.ip, peer.ip) : undefined;
    const kamailio = await startKamailio(bed, host, { sipha: false, publicIp: vip, tag: '-vrrp', cfg });
    const check = join(dir, 'check-kamailio.sh');
    writeFileSync(
      check,
      `#!/bin/sh\nkamcmd -s ${kamailio.ctl.replace(/^unix:/, 'unix:')} core.version 2>/dev/null | grep -q kamailio\n`,
      { mode: 0o755 },
    );
    const conf = join(dir, 'keepalived.conf');
    writeFileSync(
      conf,
      [
        'global_defs {',
        `  router_id sipha_${host.name}`,
        '  script_user root',
        '  enable_script_security',
        ...(t.profile === 'fastest' ? ['  vrrp_version 3'] : []),
        '}',
        'vrrp_script chk_kamailio {',
        `  script "${check}"`,
        '  interval 1',
        '  timeout 1',
        '  fall 1',
        '  rise 1',
        '}',
        'vrrp_instance VI_SIP {',
        '  state BACKUP',
        `  interface ${host.iface}`,
        '  virtual_router_id 51',
        `  priority ${priority}`,
        `  advert_int ${t.profile === 'fastest' ? FASTEST_ADVERT_S : 1}`,
        `  virtual_ipaddress { ${vip}/32 dev ${host.iface} }`,
        '  track_script { chk_kamailio }',
        '}',
        '',
      ].join('\n'),
    );
    const keepalived = host.spawn('keepalived', [
      '-n',
      '-l',
      '-D',
      '--vrrp',
      '-f',
      conf,
      '-p',
      join(dir, 'keepalived.pid'),
      '-r',
      join(dir, 'vrrp.pid'),
      '-c',
      join(dir, 'checkers.pid'),
    ]);
    return { host, kamailio, keepalived };
  };
  return [await start(a, b, 150), await start(b, a, 100)];
}

/** True when `host` holds the VIP on its interface. */
export function holdsVip(host: Host, vip: string): boolean {
  return host.run('ip', ['-4', '-o', 'addr', 'show', 'dev', host.iface]).includes(` ${vip}/`);
}
