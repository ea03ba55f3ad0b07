/**
 * TCP connections with SIP peers, both accepted (clients) and opened by the
 * sidecar (towards TCP targets), keyed by the peer's "ip:port". Every byte
 * read is framed into SIP messages and handed to `onMessage` with its flow.
 */
import net from 'node:net';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { SipStreamFramer } from '../sip/framer.ts';
import { destinationKey } from './destination.ts';

export interface Flow {
  readonly socket: net.Socket;
  readonly address: string;
  readonly port: number;
}

export type FlowMessageHandler = (bytes: Buffer, flow: Flow) => void;

const CRLF = Buffer.from('\r\n');

export class TcpFlows {
  private readonly flows = new Map<string, Flow>();
  private server: net.Server;
  private readonly bindAddress: string;
  private readonly maxBytes: number;
  private readonly log: Logger;
  private readonly metrics: Metrics;
  private readonly onMessage: FlowMessageHandler;

  constructor(bindAddress: string, maxBytes: number, log: Logger, metrics: Metrics, onMessage: FlowMessageHandler) {
    this.bindAddress = bindAddress;
    this.maxBytes = maxBytes;
    this.log = log;
    this.metrics = metrics;
    this.onMessage = onMessage;
    this.server = net.createServer({ noDelay: true }, (s) => this.adopt(s));
  }

  listen(port: number): Promise<void> {
    if (this.server.listening) this.server.close();
    this.server = net.createServer({ noDelay: true }, (s) => this.adopt(s));
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.bindAddress, port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  get(host: string, port: number): Flow | undefined {
    return this.flows.get(destinationKey(host, port));
  }

  /** The open flow to host:port, or a new outbound connection from the public address. */
  getOrOpen(host: string, port: number): Flow {
    const existing = this.get(host, port);
    if (existing !== undefined) return existing;
    const localAddress = this.bindAddress === '0.0.0.0' ? undefined : this.bindAddress;
    const socket = net.connect({ host, port, noDelay: true, ...(localAddress ? { localAddress } : {}) });
    return this.adopt(socket, host, port);
  }

  close(): void {
    this.server.close();
    for (const f of this.flows.values()) f.socket.destroy();
  }

  private adopt(socket: net.Socket, host?: string, port?: number): Flow {
    const flow: Flow = {
      socket,
      address: host ?? normalise(socket.remoteAddress ?? ''),
      port: port ?? socket.remotePort ?? 0,
    };
    const key = destinationKey(flow.address, flow.port);
    this.flows.set(key, flow);
    this.metrics.flows.inc();
    const framer = new SipStreamFramer(
      {
        message: (bytes) => this.onMessage(bytes, flow),
        ping: () => socket.write(CRLF),
        error: (reason, detail) => {
          this.metrics.drop('inbound', reason);
          this.log.info({ peer: key, reason, detail }, 'closing TCP flow: stream cannot be framed');
          socket.destroy();
        },
      },
      this.maxBytes,
    );
    socket.on('data', (chunk: Buffer) => framer.push(chunk));
    socket.on('error', (err) => this.log.debug({ peer: key, err: err.message }, 'TCP flow error'));
    socket.on('close', () => {
      if (this.flows.get(key) === flow) this.flows.delete(key);
      this.metrics.flows.dec();
    });
    return flow;
  }
}

/** "::ffff:198.18.0.10" -> "198.18.0.10", as the SIP server writes addresses. */
export function normalise(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
