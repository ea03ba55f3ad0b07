/**
 * The contract between the sidecar and the SIP server behind it (see
 * docs/decisions/0002-edge-proxy-contract.md and examples/kamailio/).
 *
 * Inbound: the sidecar prepends `X-Sipha-Src: <proto>:<ip>:<port>` to every
 * message it hands to the server; the server applies it with corex
 * `set_source_address()` and removes it.
 * Outbound: the server hands every request it sends to the sidecar's egress
 * port with `X-Sipha-Nh: <uri>` naming the real next hop; the sidecar removes
 * the header and sends the request from the public address.
 */
export const SOURCE_HEADER = 'X-Sipha-Src';
/**
 * Appended to the X-Sipha-Src value of a REGISTER the master's server already
 * accepted, replayed to a (re)joining backup from the state cache
 * (`X-Sipha-Src: udp:192.0.2.7:5060;replay`). Its credentials may be older
 * than the server's nonce lifetime and the client cannot be asked again, so
 * the server stores it without authenticating it anew. Only the sidecar
 * writes X-Sipha-Src (a client's own is removed at the edge).
 */
export const REPLAY_MARK = ';replay';
export const NEXT_HOP_HEADER = 'X-Sipha-Nh';
/**
 * A secret shared by the sidecar and its server (SIPHA_LINK_TOKEN, the same in
 * both containers of every pod of a pair): loopback is not private under
 * hostNetwork, where any process or hostNetwork pod of the node can reach the
 * server's link listener and the sidecar's egress port. The sidecar puts it on
 * every message it hands to the server; the server refuses a message without
 * it, and puts it on every request it hands to the egress port, where the
 * sidecar refuses one without it (except CANCEL and ACK built by tm for an
 * INVITE the sidecar relayed: they go where that INVITE went). A client's own
 * is removed at the edge.
 */
export const LINK_TOKEN_HEADER = 'X-Sipha-Token';

/** Transports a SIP client can use towards the sidecar. */
export type Transport = 'udp' | 'tcp' | 'tls';
