/**
 * Faults made with nftables inside a bed host: packets that match a rule on
 * the host's input are dropped, as a firewall, a black hole or a partition
 * would. Each fault is its own table, so it is removed whole.
 */
import type { Host } from './netbed.ts';

/** Drops input packets matching `match` (nft syntax, e.g. "ip saddr 198.18.0.2" or "tcp dport 5063"). */
export function dropInput(host: Host, table: string, match: string): void {
  host.run(
    'nft',
    ['-f', '-'],
    `table inet ${table} {\n chain in {\n  type filter hook input priority 0;\n  ${match} drop\n }\n}\n`,
  );
}

export function removeDrop(host: Host, table: string): void {
  host.run('nft', ['delete', 'table', 'inet', table]);
}

/** Cuts x and y apart (both directions, every protocol) while both still reach everyone else. */
export function partition(x: Host, y: Host): void {
  dropInput(x, 'partition', `ip saddr ${y.ip}`);
  dropInput(y, 'partition', `ip saddr ${x.ip}`);
}

export function heal(x: Host, y: Host): void {
  removeDrop(x, 'partition');
  removeDrop(y, 'partition');
}
