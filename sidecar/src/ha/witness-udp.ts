/**
 * The sidecar's client of the UDP witness (sidecar/src/witness/main.ts).
 * One socket for the client's life. Each attempt of a claim carries a fresh
 * random nonce and the next sequence number; only an authentic answer that
 * echoes the nonce of one of the claim's attempts counts, so a replayed or
 * forged answer is dropped and counted. An attempt waits `timeoutMs`; after
 * `attempts` silent ones the verdict is `unreachable`.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { decodeAnswer, encodeClaim, MAX_TTL_MS, NONCE_BYTES, witnessKey, witnessPairId } from '../../../contract/witness-wire.ts';
import type { Witness, WitnessVerdict } from './witness.ts';

export interface UdpWitnessOptions {
  /** The pair's replication key; the wire uses the key derived from it (witnessKey), as the witness does. */
  readonly key: Buffer;
  /** The wire key as given (the key files' witness-key, kept across rotations); else derived from `key`. */
  readonly witnessKey?: Buffer | null;
  readonly ordinal: 0 | 1;
  /** The witness's address and UDP port. */
  readonly address: string;
  readonly port: number;
  /** Lease asked for by every claim (1..60000 ms). */
  readonly ttlMs: number;
  /** Wait per attempt; default 150 ms. */
  readonly timeoutMs?: number;
  /** Attempts per claim (each a new nonce); default 2 (one retry). */
  readonly attempts?: number;
  /** Local address to bind; default any. */
  readonly bindAddress?: string;
}

/** Claims in flight at once; a caller that outruns the witness gets `unreachable` ('busy'), not a queue. */
const MAX_IN_FLIGHT = 8;

interface Attempt {
  readonly sentAt: number;
  readonly done: (v: WitnessVerdict) => void;
}

export class UdpWitness implements Witness {
  private readonly opts: Required<Omit<UdpWitnessOptions, 'bindAddress' | 'witnessKey'>>;
  private readonly key: Buffer;
  private readonly pair: number;
  private readonly sock: dgram.Socket;
  /** Nonce (hex) -> the attempt waiting for its answer. Bounded by MAX_IN_FLIGHT x attempts. */
  private readonly pending = new Map<string, Attempt>();
  private inFlight = 0;
  private closed = false;
  /** Ms since the epoch at start: a later client of the same node outranks this one's claims at the witness. */
  private readonly incarnation = Date.now();
  private seq = 0;
  /** Datagrams dropped, by reason (fixed set: size, magic, version, hmac, field, pair, nonce). */
  readonly drops = new Map<string, number>();

  private constructor(opts: UdpWitnessOptions, sock: dgram.Socket) {
    this.opts = { timeoutMs: 150, attempts: 2, ...opts };
    this.key = opts.witnessKey ?? witnessKey(opts.key);
    this.pair = witnessPairId(this.key);
    this.sock = sock;
    sock.on('message', (b) => {
      const dropped = this.onAnswer(b);
      if (dropped) this.drops.set(dropped, (this.drops.get(dropped) ?? 0) + 1);
    });
  }

  /** Binds the client's socket. Rejects on bad options (a configuration error), never later. */
  static open(opts: UdpWitnessOptions): Promise<UdpWitness> {
    if (!Number.isInteger(opts.ttlMs) || opts.ttlMs < 1 || opts.ttlMs > MAX_TTL_MS)
      return Promise.reject(new RangeError(`witness ttlMs=${opts.ttlMs}: expected 1..${MAX_TTL_MS}`));
    if ((opts.attempts ?? 2) < 1 || (opts.timeoutMs ?? 150) <= 0)
      return Promise.reject(new RangeError('witness attempts >= 1 and timeoutMs > 0'));
    const sock = dgram.createSocket('udp4');
    // Kept for the socket's whole life: a send error must never become an uncaught exception.
    sock.on('error', () => {});
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(0, opts.bindAddress, () => {
        sock.off('error', reject);
        resolve(new UdpWitness(opts, sock));
      });
    });
  }

  /** The local UDP port (answers come back to it). */
  get localPort(): number {
    return this.sock.address().port;
  }

  async claim(term: number): Promise<WitnessVerdict> {
    if (this.closed) return { verdict: 'unreachable', reason: 'closed' };
    if (!Number.isInteger(term) || term < 0 || term > 0xffffffff) return { verdict: 'unreachable', reason: 'invalid-term' };
    if (this.inFlight >= MAX_IN_FLIGHT) return { verdict: 'unreachable', reason: 'busy' };
    this.inFlight++;
    const nonces: string[] = [];
    try {
      return await new Promise<WitnessVerdict>((resolve) => {
        let settled = false;
        let timer: NodeJS.Timeout | undefined;
        let sendErr: Error | undefined;
        const done = (v: WitnessVerdict) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(v);
        };
        const attempt = (n: number) => {
          if (this.closed) return done({ verdict: 'unreachable', reason: 'closed' });
          if (n >= this.opts.attempts)
            return done(
              sendErr
                ? { verdict: 'unreachable', reason: 'send-error', err: sendErr }
                : { verdict: 'unreachable', reason: 'timeout' },
            );
          const nonce = randomBytes(NONCE_BYTES);
          this.seq = (this.seq + 1) >>> 0;
          const datagram = encodeClaim(this.key, {
            ordinal: this.opts.ordinal,
            pair: this.pair,
            term,
            ttlMs: this.opts.ttlMs,
            incarnation: this.incarnation,
            seq: this.seq,
            nonce,
          });
          const hex = nonce.toString('hex');
          nonces.push(hex);
          // An answer to an earlier attempt still counts (it was only late).
          this.pending.set(hex, { sentAt: performance.now(), done });
          timer = setTimeout(() => attempt(n + 1), this.opts.timeoutMs);
          // A failed send (async, or thrown for a bad address) moves on to the next attempt at once.
          const failed = (err: Error) => {
            if (settled) return;
            sendErr = err;
            clearTimeout(timer);
            timer = setTimeout(() => attempt(n + 1), 0);
          };
          try {
            this.sock.send(datagram, this.opts.port, this.opts.address, (err) => {
              if (err) failed(err);
            });
          } catch (err) {
            failed(err as Error);
          }
        };
        attempt(0);
      });
    } finally {
      this.inFlight--;
      for (const n of nonces) this.pending.delete(n);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const a of this.pending.values()) a.done({ verdict: 'unreachable', reason: 'closed' });
    this.pending.clear();
    this.sock.close();
  }

  /** Settles the claim the answer belongs to; a reason when the datagram is dropped. */
  private onAnswer(b: Buffer): string | null {
    const a = decodeAnswer(this.key, b);
    if (typeof a === 'string') return a;
    if (a.pair !== this.pair) return 'pair';
    const hex = a.nonce.toString('hex');
    const waiting = this.pending.get(hex);
    // Unknown nonce: a replay, a duplicate, or an answer after the claim gave up.
    if (!waiting) return 'nonce';
    if (a.verdict === 'granted' && a.holder !== this.opts.ordinal) return 'field';
    this.pending.delete(hex);
    if (a.verdict === 'granted') {
      waiting.done({ verdict: 'granted', reason: a.reason, term: a.holderTerm, validUntil: waiting.sentAt + a.remainingMs });
    } else {
      waiting.done({
        verdict: 'refused',
        reason: a.reason,
        holder: a.holder,
        holderTerm: a.holderTerm,
        remainingMs: a.remainingMs,
      });
    }
    return null;
  }
}
