/**
 * How the operator hands TLS to the sidecar (issue 11 item 1): a
 * kubernetes.io/tls Secret mounted as files, named by environment variables.
 * The sidecar re-reads the files when they change (a Secret volume is updated
 * in place by the kubelet), so a renewed certificate needs no restart.
 *
 *   SIPHA_TLS_DIR         directory holding tls.crt, tls.key and optionally ca.crt
 *                         (the Secret's entries); set: the sidecar listens for SIP
 *                         over TLS on SIPHA_TLS_PORT of the public address
 *   SIPHA_TLS_PORT        default 5061 (RFC 3261 26.2: sips default port)
 *   SIPHA_TLS_CLIENT_AUTH none | optional | require: client certificates checked
 *                         against ca.crt (mutual TLS for trunks); default none
 *   SIPHA_TLS_SNI         more certificates chosen by the client's SNI:
 *                         "name=dir,name=dir" (each dir with tls.crt and tls.key)
 *   SIPHA_TLS_OUTBOUND_CA the CA bundle (a file) that next hops reached over TLS
 *                         are verified against; default: the system's CAs
 */
export const TLS_DIR_ENV = 'SIPHA_TLS_DIR';
export const TLS_PORT_ENV = 'SIPHA_TLS_PORT';
export const TLS_CLIENT_AUTH_ENV = 'SIPHA_TLS_CLIENT_AUTH';
export const TLS_SNI_ENV = 'SIPHA_TLS_SNI';
export const TLS_OUTBOUND_CA_ENV = 'SIPHA_TLS_OUTBOUND_CA';

/** The Secret's entries (kubernetes.io/tls layout, ca.crt as cert-manager writes it). */
export const TLS_CERT_ENTRY = 'tls.crt';
export const TLS_KEY_ENTRY = 'tls.key';
export const TLS_CA_ENTRY = 'ca.crt';

export const DEFAULT_TLS_PORT = 5061;

export type TlsClientAuth = 'none' | 'optional' | 'require';
export const TLS_CLIENT_AUTH_VALUES: readonly TlsClientAuth[] = ['none', 'optional', 'require'];

/** Where the operator mounts the pair's TLS Secret in the sidecar container. */
export const TLS_MOUNT_DIR = '/etc/sipha/tls';
/** Where the operator mounts the n-th SNI Secret (n from 0). */
export const tlsSniMountDir = (n: number): string => `/etc/sipha/tls-sni/${n}`;
/** Where the operator mounts the outbound CA bundle (a ConfigMap or Secret entry ca.crt). */
export const TLS_OUTBOUND_CA_FILE = '/etc/sipha/tls-outbound/ca.crt';
