/** A TCP port on loopback that was free a moment ago (tests bind or connect from it next). */
import dgram from 'node:dgram';
import net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * A port on loopback that was free for both TCP and UDP a moment ago, below the
 * kernel's ephemeral range (ip_local_port_range starts at 32768): no client's
 * random source port (a resolver's query, an outgoing connection) takes it
 * meanwhile, as one did to a test's `listen(0)` port + 1 in CI.
 */
export async function freeFixedPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await bindsBoth(port)) return port;
  }
  throw new Error('no port free for TCP and UDP on loopback in 20000-31999');
}

async function bindsBoth(port: number): Promise<boolean> {
  const tcp = net.createServer();
  const udp = dgram.createSocket('udp4');
  const bound = (s: net.Server | dgram.Socket, bind: () => void) =>
    new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.once('listening', () => resolve(true));
      bind();
    });
  try {
    return (await bound(tcp, () => tcp.listen(port, '127.0.0.1'))) && (await bound(udp, () => udp.bind(port, '127.0.0.1')));
  } finally {
    await new Promise<void>((r) => (tcp.listening ? tcp.close(() => r()) : r()));
    try {
      udp.close();
    } catch {
      // never bound
    }
  }
}
