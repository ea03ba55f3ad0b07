/** Stock Kamailio (Debian) in a bed host, with the example configuration. */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Host, NetBed } from './netbed.ts';
import { until, watchOutput } from './procs.ts';

export const KAMAILIO_CFG = fileURLToPath(new URL('../../examples/kamailio/kamailio.cfg', import.meta.url));

export interface Kamailio {
  readonly child: ChildProcess;
  readonly ctl: string;
  readonly output: () => string;
  /** Runs kamcmd against this instance; kamcmd exits 0 even on errors, so callers check the text. */
  kamcmd(args: string[], input?: string): string;
}

/** The link's shared secret every test pair uses (contract/link.ts): the sidecars get it too (sidecar.ts). */
export const LINK_TOKEN = 'sipha-test-link-token-0123456789';

export async function startKamailio(
  bed: NetBed,
  host: Host,
  opts: {
    sipha: boolean;
    publicIp: string;
    tag?: string;
    directPort?: number;
    defines?: string[];
    env?: Record<string, string>;
    /** Another configuration (a bench's, e.g. one that includes the example); default the example. */
    cfg?: string;
  },
): Promise<Kamailio> {
  const dir = bed.subdir(`kamailio-${host.name}${opts.tag ?? ''}`);
  const ctl = `unix:${dir}/ctl`;
  const args = ['-DD', '-E', '-f', opts.cfg ?? KAMAILIO_CFG, '-Y', dir, '-m', '256', '-M', '16'];
  if (opts.sipha) args.push('-A', 'WITH_SIPHA');
  for (const d of opts.defines ?? []) args.push('-A', d);
  const child = host.spawn('kamailio', args, {
    env: {
      ...process.env,
      SIPHA_PUBLIC_IP: opts.publicIp,
      SIPHA_CTL: ctl,
      ...(opts.directPort ? { SIPHA_DIRECT_PORT: String(opts.directPort) } : {}),
      ...(opts.sipha ? { SIPHA_LINK_TOKEN: LINK_TOKEN } : {}),
      ...opts.env,
    },
  });
  const out = watchOutput(child);
  const k: Kamailio = {
    child,
    ctl,
    output: out.text,
    kamcmd: (a, input) => host.run('kamcmd', ['-s', ctl, ...a], input),
  };
  await until(
    () => {
      if (child.exitCode !== null) throw new Error(`kamailio exited ${child.exitCode}:\n${out.text().slice(-3000)}`);
      try {
        return k.kamcmd(['core.version']).includes('kamailio');
      } catch {
        return false;
      }
    },
    15000,
    'kamailio answers on its ctl socket',
  );
  return k;
}

/** Reads one usrloc statistic (e.g. "registered_users"). */
export function usrlocStat(k: Kamailio, name: string): number {
  const out = k.kamcmd(['stats.get_statistics', 'usrloc:']);
  const m = out.match(new RegExp(`usrloc:${name} = (\\d+)`));
  if (!m) throw new Error(`no usrloc:${name} in: ${out}`);
  return Number(m[1]);
}

export interface Binding {
  readonly aor: string;
  readonly address: string;
  readonly received: string;
}

/**
 * Looks every AOR up in the location table, in one kamcmd session fed on
 * stdin (ul.dump fails beyond ~1000 users on 5.6: see FIELD-NOTES).
 */
export function lookupAll(k: Kamailio, aors: string[]): Map<string, Binding> {
  const found = new Map<string, Binding>();
  for (let i = 0; i < aors.length; i += 200) {
    const batch = aors.slice(i, i + 200);
    const out = k.kamcmd([], `${batch.map((a) => `ul.lookup location ${a}`).join('\n')}\n`);
    for (const block of out.split('kamcmd> ').slice(1)) {
      const aor = block.match(/AoR: (\S+)/)?.[1];
      const address = block.match(/Address: (\S+)/)?.[1];
      const received = block.match(/Received: (\S+)/)?.[1];
      if (aor && address) found.set(aor, { aor, address, received: received ?? '' });
    }
  }
  return found;
}
