/**
 * Kamailio's own replication, the alternative a Kamailio user would weigh
 * against sipha: `dmq` + `dmq_usrloc` (usrloc changes sent to the other node
 * as KDMQ requests, a full sync at start), behind keepalived for the address.
 * The configuration is the example registrar (examples/kamailio/kamailio.cfg,
 * run without WITH_SIPHA) with the lines README.dmq and README.dmq_usrloc ask
 * for, written from the example at run time so the two cannot drift apart:
 * the modules and their parameters, a listener on the host's own address for
 * the KDMQ traffic (the VIP moves), and KDMQ handled first in request_route.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KAMAILIO_CFG } from './kamailio.ts';

/** Where the lines go: both markers must be in the example, or the bench would measure something else. */
const MODULES_END = '####### Routing logic #########';
const ROUTE_START = 'request_route {';

export function dmqConfig(example: string, hostIp: string, peerIp: string): string {
  if (!example.includes(MODULES_END) || !example.includes(ROUTE_START)) {
    throw new Error(`the example configuration lost "${MODULES_END}" or "${ROUTE_START}": update kamailio-dmq.ts`);
  }
  const modules = [
    '####### Kamailio DMQ (bench baseline: test/lib/kamailio-dmq.ts) #########',
    `listen=udp:${hostIp}:5060`,
    'loadmodule "dmq.so"',
    'loadmodule "dmq_usrloc.so"',
    `modparam("dmq", "server_address", "sip:${hostIp}:5060")`,
    `modparam("dmq", "notification_address", "sip:${peerIp}:5060")`,
    'modparam("dmq_usrloc", "enable", 1)',
    '',
  ].join('\n');
  const route = [ROUTE_START, '\tif (is_method("KDMQ")) {', '\t\tdmq_handle_message();', '\t\texit;', '\t}'].join('\n');
  return example.replace(MODULES_END, `${modules}\n${MODULES_END}`).replace(ROUTE_START, route);
}

/** Writes the DMQ configuration for `hostIp` (its peer `peerIp`) into `dir`; returns its path. */
export function writeDmqConfig(dir: string, hostIp: string, peerIp: string): string {
  const path = join(dir, 'kamailio-dmq.cfg');
  writeFileSync(path, dmqConfig(readFileSync(KAMAILIO_CFG, 'utf8'), hostIp, peerIp));
  return path;
}
