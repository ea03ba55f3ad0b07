/**
 * Versioned wire formats between the two sidecars of a pair. Every datagram
 * and frame ends in a 16-byte HMAC-SHA256 (key: the pair's replication
 * Secret) over everything before it; anything that fails it is dropped.
 *
 * Heartbeat (UDP, both directions), version 3:
 *   'SPHB' | ver u8 | ordinal u8 | role u8 | serverUp u8 | term u32 |
 *   incarnation u48 | echo u48 | beat u32 | appliedSeq u48 | heardAgo u16 | hmac[16]
 *   incarnation: ms since the epoch when the sender started; echo: the peer
 *   incarnation the sender answers (0: none yet). A beat counts only if it
 *   echoes the receiver's own incarnation (it was made after the receiver
 *   started), so beats recorded before a restart cannot be replayed
 *   (sidecar/src/ha/beat-freshness.ts). heardAgo: ms since the sender last
 *   heard the receiver (HEARD_NEVER: not since it started), so a master learns
 *   that its backup has stopped hearing it while it still hears the backup
 *   (decision 0005).
 *
 * Replication (one TCP connection, master -> backup; acks flow back):
 *   len u32 (bytes after this field) | type u8 | body | hmac[16]
 *   CHALLENGE body: nonceR[16] (backup -> master, first, under the pair's key)
 *   HELLO body: ordinal u8 | term u32 | incarnation u32 | nonceR[16] | nonceS[16]
 *              (master -> backup, under the pair's key; echoes the challenge)
 *   then, under the session key HMAC-SHA256(key, "sipha-session" | nonceR | nonceS):
 *   DATA  body: seq u48 | term u32 | link u8 | payload (the bytes the master wrote to its server)
 *   ACK   body: seq u48 (highest seq applied by the backup)
 *   SYNCED body: seq u48 (master -> backup: messages up to seq carry the full
 *                state; once it has applied them the backup is in sync)
 * A recorded stream cannot be replayed: its HELLO echoes another challenge,
 * and its frames carry another session's tags (issue 9 item 3).
 */
import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import { ROLES, type Role } from './names.ts';

export const WIRE_VERSION = 1;
/**
 * Version 2 added `echo` (issue 9: version 1 beats could be replayed across restarts);
 * version 3 `heardAgo` (a one-way loss made two masters). Neither was in a release, so
 * each replaced the last; once one is released, a new version must keep the last one readable
 * (a rolling upgrade runs a pair of both).
 */
export const HEARTBEAT_VERSION = 3;
/** `heardAgo` of a sender that has not heard its peer since it started; real values stop one below. */
export const HEARD_NEVER = 0xffff;
/** Bytes of the truncated HMAC-SHA256 tag. */
export const MAC = 16;
const HB_MAGIC = 0x53504842; // 'SPHB'
export const HEARTBEAT_BYTES = 4 + 1 + 1 + 1 + 1 + 4 + 6 + 6 + 4 + 6 + 2 + MAC;

export interface Heartbeat {
  ordinal: 0 | 1;
  role: Role;
  serverUp: boolean;
  term: number;
  incarnation: number;
  /** The last incarnation the sender heard from its peer; 0 when none. */
  echo: number;
  beat: number;
  appliedSeq: number;
  /** Ms since the sender last heard its peer, at most HEARD_NEVER - 1; HEARD_NEVER: not since it started. */
  heardAgo: number;
}

/**
 * createHmac() with a raw Buffer key builds a KeyObject on every call, which cost
 * ~15 us per frame (a fifth of the sidecar's CPU under call load); with a
 * KeyObject made once it is ~3 us. Callers keep passing the Buffer.
 */
const keyObjects = new WeakMap<Buffer, KeyObject>();
export function keyObject(key: Buffer): KeyObject {
  let k = keyObjects.get(key);
  if (k === undefined) {
    k = createSecretKey(key);
    keyObjects.set(key, k);
  }
  return k;
}

/** HMAC-SHA256 over the parts, truncated to 16 bytes: the tag of every sipha datagram and frame. */
export function mac(key: Buffer, ...parts: Buffer[]): Buffer {
  const h = createHmac('sha256', keyObject(key));
  for (const p of parts) h.update(p);
  return h.digest().subarray(0, MAC);
}

export function macOk(key: Buffer, body: Buffer, tag: Buffer): boolean {
  return tag.length === MAC && timingSafeEqual(mac(key, body), tag);
}

export function encodeHeartbeat(key: Buffer, hb: Heartbeat): Buffer {
  const b = Buffer.alloc(HEARTBEAT_BYTES);
  b.writeUInt32BE(HB_MAGIC, 0);
  b[4] = HEARTBEAT_VERSION;
  b[5] = hb.ordinal;
  b[6] = ROLES.indexOf(hb.role);
  b[7] = hb.serverUp ? 1 : 0;
  b.writeUInt32BE(hb.term >>> 0, 8);
  b.writeUIntBE(hb.incarnation, 12, 6);
  b.writeUIntBE(hb.echo, 18, 6);
  b.writeUInt32BE(hb.beat >>> 0, 24);
  b.writeUIntBE(hb.appliedSeq, 28, 6);
  b.writeUInt16BE(hb.heardAgo, 34);
  mac(key, b.subarray(0, HEARTBEAT_BYTES - MAC)).copy(b, HEARTBEAT_BYTES - MAC);
  return b;
}

/** The heartbeat, or a reason it was dropped. */
export function decodeHeartbeat(key: Buffer, b: Buffer): Heartbeat | string {
  if (b.length !== HEARTBEAT_BYTES) return 'size';
  if (b.readUInt32BE(0) !== HB_MAGIC) return 'magic';
  if (b[4] !== HEARTBEAT_VERSION) return 'version';
  if (!macOk(key, b.subarray(0, HEARTBEAT_BYTES - MAC), b.subarray(HEARTBEAT_BYTES - MAC))) return 'hmac';
  const role = ROLES[b[6] as number];
  if (role === undefined || (b[5] !== 0 && b[5] !== 1)) return 'field';
  return {
    ordinal: b[5] as 0 | 1,
    role,
    serverUp: b[7] === 1,
    term: b.readUInt32BE(8),
    incarnation: b.readUIntBE(12, 6),
    echo: b.readUIntBE(18, 6),
    beat: b.readUInt32BE(24),
    appliedSeq: b.readUIntBE(28, 6),
    heardAgo: b.readUInt16BE(34),
  };
}

export const FrameType = { Data: 1, Ack: 2, Hello: 3, Synced: 4, Challenge: 5, Beat: 6 } as const;
/** Bytes of each side's nonce in the replication handshake. */
export const NONCE = 16;

export type Frame =
  | { type: typeof FrameType.Data; seq: number; term: number; link: number; payload: Buffer }
  | { type: typeof FrameType.Ack; seq: number }
  | { type: typeof FrameType.Synced; seq: number }
  | { type: typeof FrameType.Hello; ordinal: 0 | 1; term: number; incarnation: number; nonceR: Buffer; nonceS: Buffer }
  | { type: typeof FrameType.Challenge; nonceR: Buffer }
  /** A heartbeat (encodeHeartbeat's bytes) carried on the stream too: a second path for the peer's beats. */
  | { type: typeof FrameType.Beat; heartbeat: Buffer };

/** The key of one replication session: both nonces, so no other session's tags fit. */
export function sessionKey(key: Buffer, nonceR: Buffer, nonceS: Buffer): Buffer {
  return createHmac('sha256', keyObject(key)).update('sipha-session').update(nonceR).update(nonceS).digest();
}

/** A DATA frame as a list of buffers (the payload is not copied). */
export function encodeData(key: Buffer, seq: number, term: number, link: number, payload: Buffer[]): Buffer[] {
  let n = 0;
  for (const p of payload) n += p.length;
  const head = Buffer.allocUnsafe(4 + 1 + 6 + 4 + 1);
  head.writeUInt32BE(1 + 6 + 4 + 1 + n + MAC, 0);
  head[4] = FrameType.Data;
  head.writeUIntBE(seq, 5, 6);
  head.writeUInt32BE(term >>> 0, 11);
  head[15] = link;
  const tag = mac(key, head.subarray(4), ...payload);
  return [head, ...payload, tag];
}

export function encodeAck(key: Buffer, seq: number): Buffer {
  return encodeSeqFrame(key, FrameType.Ack, seq);
}

export function encodeSynced(key: Buffer, seq: number): Buffer {
  return encodeSeqFrame(key, FrameType.Synced, seq);
}

function encodeSeqFrame(key: Buffer, type: number, seq: number): Buffer {
  const b = Buffer.allocUnsafe(4 + 1 + 6 + MAC);
  b.writeUInt32BE(1 + 6 + MAC, 0);
  b[4] = type;
  b.writeUIntBE(seq, 5, 6);
  mac(key, b.subarray(4, 11)).copy(b, 11);
  return b;
}

export function encodeHello(
  key: Buffer,
  ordinal: 0 | 1,
  term: number,
  incarnation: number,
  nonceR: Buffer,
  nonceS: Buffer,
): Buffer {
  const body = 1 + 1 + 4 + 4 + NONCE + NONCE;
  const b = Buffer.allocUnsafe(4 + body + MAC);
  b.writeUInt32BE(body + MAC, 0);
  b[4] = FrameType.Hello;
  b[5] = ordinal;
  b.writeUInt32BE(term >>> 0, 6);
  b.writeUInt32BE(incarnation >>> 0, 10);
  nonceR.copy(b, 14, 0, NONCE);
  nonceS.copy(b, 14 + NONCE, 0, NONCE);
  mac(key, b.subarray(4, 4 + body)).copy(b, 4 + body);
  return b;
}

export function encodeChallenge(key: Buffer, nonceR: Buffer): Buffer {
  const b = Buffer.allocUnsafe(4 + 1 + NONCE + MAC);
  b.writeUInt32BE(1 + NONCE + MAC, 0);
  b[4] = FrameType.Challenge;
  nonceR.copy(b, 5, 0, NONCE);
  mac(key, b.subarray(4, 5 + NONCE)).copy(b, 5 + NONCE);
  return b;
}

/** A heartbeat on the stream, both ways (the heartbeat keeps its own tag and freshness fields). */
export function encodeBeat(key: Buffer, heartbeat: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(4 + 1 + heartbeat.length + MAC);
  b.writeUInt32BE(1 + heartbeat.length + MAC, 0);
  b[4] = FrameType.Beat;
  b.set(heartbeat, 5);
  mac(key, b.subarray(4, 5 + heartbeat.length)).copy(b, 5 + heartbeat.length);
  return b;
}

export const MAX_FRAME = 1 << 20;
/** Far above a heartbeat's size; anything longer in a Beat frame is corrupt. */
const MAX_BEAT = 256;

/**
 * Reads frames from a stream. Calls `on(frame)` per frame; returns a reason
 * when the stream is corrupt or forged (the caller closes the connection).
 */
export class FrameReader {
  private pending: Buffer | null = null;
  /** The key the next frame is checked with: the pair's until the handshake, then the session's. */
  key: Buffer;
  /**
   * Tried when `key` does not fit, until the handshake sets the session key:
   * the other key of a rotation (decision 0012). The one that fits becomes `key`,
   * so the session is derived from the key both sides hold.
   */
  alsoKeys: Buffer[] = [];
  private readonly on: (f: Frame) => void;

  constructor(key: Buffer, on: (f: Frame) => void, alsoKeys: Buffer[] = []) {
    this.key = key;
    this.on = on;
    this.alsoKeys = alsoKeys;
  }

  private fits(body: Buffer, tag: Buffer): boolean {
    if (macOk(this.key, body, tag)) return true;
    const k = this.alsoKeys.find((a) => macOk(a, body, tag));
    if (k === undefined) return false;
    this.key = k;
    return true;
  }

  push(chunk: Buffer): string | null {
    let b = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let p = 0;
    while (b.length - p >= 4) {
      const len = b.readUInt32BE(p);
      if (len < 1 + MAC || len > MAX_FRAME) return 'frame-length';
      if (b.length - p - 4 < len) break;
      const body = b.subarray(p + 4, p + 4 + len - MAC);
      const tag = b.subarray(p + 4 + len - MAC, p + 4 + len);
      if (!this.fits(body, tag)) return 'hmac';
      const t = body[0];
      if (t === FrameType.Data && body.length >= 12) {
        this.on({
          type: t,
          seq: body.readUIntBE(1, 6),
          term: body.readUInt32BE(7),
          link: body[11] as number,
          payload: body.subarray(12),
        });
      } else if ((t === FrameType.Ack || t === FrameType.Synced) && body.length === 7) {
        this.on({ type: t, seq: body.readUIntBE(1, 6) });
      } else if (t === FrameType.Hello && body.length === 10 + 2 * NONCE && (body[1] === 0 || body[1] === 1)) {
        this.on({
          type: t,
          ordinal: body[1] as 0 | 1,
          term: body.readUInt32BE(2),
          incarnation: body.readUInt32BE(6),
          nonceR: Buffer.from(body.subarray(10, 10 + NONCE)),
          nonceS: Buffer.from(body.subarray(10 + NONCE)),
        });
      } else if (t === FrameType.Challenge && body.length === 1 + NONCE) {
        this.on({ type: t, nonceR: Buffer.from(body.subarray(1)) });
      } else if (t === FrameType.Beat && body.length > 1 && body.length <= 1 + MAX_BEAT) {
        this.on({ type: t, heartbeat: Buffer.from(body.subarray(1)) });
      } else {
        return 'frame-type';
      }
      p += 4 + len;
    }
    if (p < b.length) {
      b = b.subarray(p);
      this.pending = b;
    }
    return null;
  }
}
