/**
 * The node-side SNAT of a pair's SIP egress in the LB VIP modes (decision
 * 0010): what the egress agent (main.ts) loads into the node's nftables, as a
 * pure function. The new master's relayed requests (INVITE, BYE to the callee)
 * must leave with the VIP as source, or the callee answers the pod's address.
 *
 * The SNAT has to happen in the node's network namespace, not the pod's: the
 * node's conntrack must hold the translation so that the callee's answer to
 * VIP:port is turned back into the pod's address there. A SNAT in the pod's
 * own namespace makes the node record an untranslated VIP->callee flow; the
 * answer matches it as its reply, kube-proxy's DNAT (new flows only) never
 * sees it, and the node, which has no route to the VIP but its own subnet,
 * sends it back out (decision 0010, "Egress").
 */
import { createHash } from 'node:crypto';

export interface EgressRules {
  /** This pair's own table: loaded whole and atomically, never touching another table. */
  table: string;
  /** The pair's pod addresses (both pods; a rule for a pod on another node matches nothing here). */
  podIps: readonly string[];
  vip: string;
  /** The sidecar's public SIP port (UDP and TCP): the only port translated. */
  sipPort: number;
}

/**
 * kube-proxy's masquerade mark (its default masqueradeBit 14): a packet it
 * marked (a pod reaching itself through a Service, say) keeps kube-proxy's
 * MASQUERADE, which our earlier chain would otherwise pre-empt.
 */
export const KUBE_PROXY_MASQ_MARK = 0x4000;
/** Before the usual source NAT chains (srcnat = 100), so the node's or the CNI's masquerade does not win. */
export const NAT_PRIORITY = 90;

/** One nft table per pair, named from its namespace and name (nft names are short identifiers). */
export function tableName(namespace: string, pair: string): string {
  return `sipha_egress_${createHash('sha256').update(`${namespace}/${pair}`).digest('hex').slice(0, 12)}`;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The nft script that replaces the pair's table in one transaction: declared
 * (so the delete cannot fail), deleted, written again. No pod address yet: the
 * table and its chain, no rule.
 */
export function nftScript(r: EgressRules): string {
  for (const ip of [r.vip, ...r.podIps]) if (!IPV4.test(ip)) throw new Error(`not an IPv4 address: ${ip}`);
  if (!Number.isInteger(r.sipPort) || r.sipPort < 1 || r.sipPort > 65535) throw new Error(`bad port ${r.sipPort}`);
  const ips = [...new Set(r.podIps)].sort();
  const rules = ips.length
    ? ['udp', 'tcp'].map(
        (proto) =>
          `    ip saddr { ${ips.join(', ')} } ${proto} sport ${r.sipPort} meta mark & 0x${KUBE_PROXY_MASQ_MARK.toString(16)} == 0 snat to ${r.vip}:${r.sipPort}`,
      )
    : [];
  return [
    `table ip ${r.table}`,
    `delete table ip ${r.table}`,
    `table ip ${r.table} {`,
    '  chain postrouting {',
    `    type nat hook postrouting priority ${NAT_PRIORITY}; policy accept;`,
    ...rules,
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * The pod addresses of the conntrack entries this SNAT made (listed by
 * `conntrack -L --reply-dst VIP --reply-port-dst PORT`) that are not the
 * pair's pods any more. Such an entry outlives its pod (UDP: 120 s, renewed by
 * every packet that matches it) and catches the callee's next packet to the
 * VIP on that node, a REGISTER say, as a reply: it goes to the dead pod's
 * address, never to the new master through kube-proxy (kubernetes#59368, the
 * same trap with the roles reversed). The agent deletes them.
 */
export function staleSources(listing: string, podIps: readonly string[]): string[] {
  const live = new Set(podIps);
  const stale = new Set<string>();
  for (const line of listing.split('\n')) {
    const src = /\bsrc=(\S+)/.exec(line)?.[1];
    if (src && IPV4.test(src) && !live.has(src)) stale.add(src);
  }
  return [...stale].sort();
}

/** The script that removes the pair's table (the agent's exit). */
export function nftDeleteScript(table: string): string {
  return `table ip ${table}\ndelete table ip ${table}\n`;
}
