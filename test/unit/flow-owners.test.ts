/**
 * Requests to a registered Contact go on a connection its AOR registered
 * over (session 9: after a takeover, a client's new connection came from the
 * port another client's dead one had, and the far end's BYE for the one went
 * to the other). The edge proxy with its real TCP flows, state cache and flow
 * successors wired as a node wires them; clients on loopback with chosen
 * source ports; the server's side played by fromServer.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { learnClientFlows } from '../../sidecar/src/ha/flow-successors.ts';
import { StateCache } from '../../sidecar/src/ha/state-cache.ts';
import { edgeWithServer } from '../lib/edge-harness.ts';
import { freePort } from '../lib/free-port.ts';
import { sleep, until } from '../lib/procs.ts';

let seq = 0;

async function setUp() {
  const edge = await edgeWithServer();
  const cache = new StateCache();
  learnClientFlows(cache, edge.proxy, 1000);
  edge.proxy.tap = (m, link, slices, flow) => cache.observe(m, link, slices, flow);
  edge.proxy.replyTap = (m) => cache.answer(m);
  const metric = async (reason: string) => {
    const text = await edge.metrics.registry.metrics();
    const m = new RegExp(`sipha_messages_dropped_total\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)`).exec(text);
    return m ? Number(m[1]) : 0;
  };

  /** A REGISTER of `user` over `sock` (from `port`), its instance `device`, answered 200 by the server played here. */
  const register = async (sock: net.Socket, got: () => string, user: string, port: number, device = user) => {
    const n = ++seq;
    const via = `Via: SIP/2.0/TCP 127.0.0.1:${port};branch=z9hG4bK-reg${n};rport`;
    const head = `From: <sip:${user}@v>;tag=f${n}\r\nTo: <sip:${user}@v>\r\nCall-ID: reg-${user}-${n}\r\nCSeq: 1 REGISTER\r\n`;
    const contact = `Contact: <sip:${user}@127.0.0.1:${port};transport=tcp;ob>;+sip.instance="<urn:uuid:${device}>";reg-id=1\r\n`;
    const before = cache.pendingSize;
    sock.write(`REGISTER sip:v SIP/2.0\r\n${via}\r\n${head}${contact}Expires: 600\r\nContent-Length: 0\r\n\r\n`);
    await until(() => cache.pendingSize > before, 3000, 'the REGISTER reached the cache');
    edge.proxy.fromServer(
      Buffer.from(
        `SIP/2.0 200 OK\r\n${via.replace(';rport', `;rport=${port};received=127.0.0.1`)}\r\n${head.replace('\r\nCall-ID', ';tag=s\r\nCall-ID')}${contact}Content-Length: 0\r\n\r\n`,
      ),
    );
    await until(() => got().includes(`Call-ID: reg-${user}-${n}`), 3000, `${user} registered`);
  };

  /** A client connected from `port`, registered as `user` unless told not to. */
  const client = async (user: string, port: number, registered = true) => {
    const sock = net.connect({ port: edge.sipPort, host: '127.0.0.1', localPort: port });
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString('latin1');
    });
    // A connect that fails (its source port taken) is an error here, not a wait for ever: a CI
    // run sat 13 minutes in this file (session 21), on the 15-minute test timeout.
    await new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (err) => reject(new Error(`${user} could not connect from port ${port}: ${err.message}`)));
    });
    sock.on('error', () => {});
    const c = { sock, got: () => got, register: (as: string, device = as) => register(sock, () => got, as, port, device) };
    if (registered) await c.register(user);
    return c;
  };

  /** The server's BYE in a dialog whose remote target is `ruri`, sent where `nh` says. */
  const bye = (ruri: string, nh = ruri) => {
    const n = ++seq;
    edge.proxy.fromServer(
      Buffer.from(
        `BYE ${ruri} SIP/2.0\r\nX-Sipha-Nh: ${nh}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-bye${n}\r\n` +
          `From: <sip:far@v>;tag=x\r\nTo: <sip:alice@v>;tag=y\r\nCall-ID: dialog-${n}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
  };
  return { ...edge, client, bye, metric };
}

describe("requests to a registered Contact stay off another AOR's connection", () => {
  it("alice's BYE goes on her new connection, not on bob's connection from her old port", async () => {
    const { proxy, server, client, bye } = await setUp();
    try {
      const [p1, p2] = [await freePort(), await freePort()];
      const alice = await client('alice', p1);
      alice.sock.resetAndDestroy(); // her connection dies (as with the master)
      await sleep(50);
      const bob = await client('bob', p1); // bob comes back first, from her old port
      const alice2 = await client('alice', p2);
      bye(`sip:alice@127.0.0.1:${p1};transport=tcp`);
      await until(() => alice2.got().includes('BYE sip:alice'), 3000, 'the BYE reaches alice on her new connection');
      await sleep(100);
      assert.doesNotMatch(bob.got(), /BYE/, 'bob got nothing of it');
      for (const c of [bob, alice2]) c.sock.destroy();
    } finally {
      proxy.close();
      server.close();
    }
  });

  it('while alice has not come back, it is not sent on bob’s connection (counted); a proxy on the way is not judged', async () => {
    const { proxy, server, client, bye, metric } = await setUp();
    try {
      const p1 = await freePort();
      const alice = await client('alice', p1);
      alice.sock.resetAndDestroy();
      await sleep(50);
      const bob = await client('bob', p1);
      const before = await metric('flow-of-another-client');
      bye(`sip:alice@127.0.0.1:${p1};transport=tcp`);
      await until(async () => (await metric('flow-of-another-client')) === before + 1, 3000, 'the drop is counted');
      // The same Request-URI sent through a proxy at bob's address is the proxy's business: sent.
      const sbc = await client('sbc', await freePort(), false);
      const sbcPort = sbc.sock.localPort as number;
      bye(`sip:alice@127.0.0.1:${p1};transport=tcp`, `sip:127.0.0.1:${sbcPort};transport=tcp;lr`);
      await until(() => sbc.got().includes('BYE sip:alice'), 3000, 'sent to the proxy on the way');
      await sleep(100);
      assert.doesNotMatch(bob.got(), /BYE/, 'bob got nothing');
      for (const c of [bob, sbc]) c.sock.destroy();
    } finally {
      proxy.close();
      server.close();
    }
  });

  it('a connection nobody registered over yet gets it (alice back from her own port), as before', async () => {
    const { proxy, server, client, bye } = await setUp();
    try {
      const p1 = await freePort();
      const alice = await client('alice', p1);
      alice.sock.resetAndDestroy();
      await sleep(50);
      const back = await client('alice', p1, false);
      bye(`sip:alice@127.0.0.1:${p1};transport=tcp`);
      await until(() => back.got().includes('BYE sip:alice'), 3000, 'delivered on the connection at her address');
      back.sock.destroy();
    } finally {
      proxy.close();
      server.close();
    }
  });

  it("one device's lines are its own: back from its port with one line registered, the other line's request reaches it", async () => {
    const { proxy, server, client, bye } = await setUp();
    try {
      const p1 = await freePort();
      const phone = await client('line-a', p1);
      await phone.register('line-b', 'line-a'); // the same device (+sip.instance), a second AOR
      phone.sock.resetAndDestroy();
      await sleep(50);
      const back = await client('line-b', p1, false);
      await back.register('line-b', 'line-a'); // only line B re-registered so far
      bye(`sip:line-a@127.0.0.1:${p1};transport=tcp`);
      await until(() => back.got().includes('BYE sip:line-a'), 3000, "line A's request reaches the device");
      back.sock.destroy();
    } finally {
      proxy.close();
      server.close();
    }
  });
});
