/**
 * Which VIPs a SipHaPair may announce (issue 9 item 11). In arp mode the
 * sidecar takes the address by gratuitous ARP, so whoever may create a pair
 * could otherwise take a node's or the gateway's address. The installer sets
 * the ranges (chart value allowedVipRanges); the chart also enforces them at
 * admission (a ValidatingAdmissionPolicy) and the operator checks again here.
 */

export interface Cidr {
  readonly text: string;
  readonly base: number;
  readonly mask: number;
}

function ipv4(text: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) return null;
  return (((o[0] as number) << 24) | ((o[1] as number) << 16) | ((o[2] as number) << 8) | (o[3] as number)) >>> 0;
}

/** Parses "a.b.c.d/n, ..."; null (unrestricted) when empty. Throws naming the first bad entry. */
export function parseVipRanges(raw: string | undefined): Cidr[] | null {
  if (raw === undefined || raw.trim() === '') return null;
  return raw.split(',').map((part) => {
    const text = part.trim();
    const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
    const base = m ? ipv4(m[1] as string) : null;
    const bits = m ? Number(m[2]) : -1;
    if (base === null || bits < 0 || bits > 32) throw new Error(`allowed VIP range "${text}" is not an IPv4 CIDR`);
    const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
    return { text, base: (base & mask) >>> 0, mask };
  });
}

/** Is `address` inside one of `ranges` (always, when unrestricted)? */
export function vipAllowed(address: string, ranges: Cidr[] | null): boolean {
  if (ranges === null) return true;
  const a = ipv4(address);
  return a !== null && ranges.some((r) => (a & r.mask) >>> 0 === r.base);
}
