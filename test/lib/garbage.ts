/**
 * Sends malformed SIP datagrams to a target: run inside a bed host as
 * `node garbage.ts HOST PORT COUNT INTERVAL_MS`. Bounded in count and time;
 * prints how many it sent.
 */
import dgram from 'node:dgram';

export const MALFORMED: readonly string[] = [
  '',
  'garbage\x00\x01\x02\xff',
  'INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n',
  'INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: g1\r\nCSeq: 1 INVITE\r\nContent-Length: 500\r\n\r\nshort',
  'REGISTER sip:y SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n',
  'SIP/2.0 99999 Nope\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKb\r\n\r\n',
  'OPTIONS  sip:y  SIP/2.0\r\n\r\n',
  'OPTIONS sip:y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKc\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:y>\r\nCall-ID: g2\r\nCSeq: 99999999999 OPTIONS\r\n\r\n',
  'BYE sip:y SIP/2.0\r\nVia: ;;;\r\nFrom: x\r\nTo: y\r\nCall-ID: z\r\nCSeq: 1 BYE\r\n\r\n',
];

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() as string)) {
  const [host, portText, countText, intervalText] = process.argv.slice(2);
  const count = Math.min(Number(countText), 100000);
  const interval = Number(intervalText);
  const socket = dgram.createSocket('udp4');
  let sent = 0;
  const deadline = Date.now() + 120_000;
  const tick = () => {
    if (sent >= count || Date.now() > deadline) {
      console.log(`sent ${sent}`);
      socket.close();
      return;
    }
    const payload = Buffer.from(MALFORMED[sent % MALFORMED.length] as string, 'latin1');
    socket.send(payload, Number(portText), host, () => {
      sent++;
      setTimeout(tick, interval);
    });
  };
  tick();
}
