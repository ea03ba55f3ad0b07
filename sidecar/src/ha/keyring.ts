/**
 * The pair's keys (issue 9 item 4, decision 0012). In a cluster they are
 * files of the replication Secret, mounted into the sidecar container alone:
 * never an environment variable, which /proc/<pid>/environ shows to every
 * container of a pod that shares its process namespace. When the operator
 * rotates the key the kubelet rewrites the files in place, so the sidecar
 * reads them again every second; nothing restarts.
 *
 * Files, each base64 of at least 16 bytes unless said:
 *   hmac-key       the key this side signs with
 *   key-id         its id (decimal; 1 when absent)
 *   hmac-key-also  a second key accepted too, while a rotation runs (optional)
 *   key-id-also    its id
 *   witness-key    the UDP arbiter's key (witnessKey of the pair's first key),
 *                  kept across rotations so the arbiter never needs a new one (optional)
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.ts';

export interface Keyring {
  /** The key this side signs heartbeats and handshakes with. */
  readonly sign: Buffer;
  readonly signId: number;
  /** Accepted as well as `sign` (the next key, then the previous one, during a rotation). */
  readonly also: Buffer | null;
  readonly alsoId: number | null;
  /** The UDP arbiter's key as given; null: derive it from `sign` at start. */
  readonly witness: Buffer | null;
}

/** Every key a message may be signed with, the signing key first. */
export function acceptedKeys(k: Keyring): Buffer[] {
  return k.also ? [k.sign, k.also] : [k.sign];
}

/** What the sidecar reports on its pod: "<sign id>" or "<sign id>,<also id>" (KEYS_ANNOTATION). */
export function keyIds(k: Keyring): string {
  return k.alsoId === null ? String(k.signId) : `${k.signId},${k.alsoId}`;
}

export function sameKeys(a: Keyring, b: Keyring): boolean {
  return (
    keyIds(a) === keyIds(b) && a.sign.equals(b.sign) && (a.also === null ? b.also === null : b.also?.equals(a.also) === true)
  );
}

/** A key from its base64 text; `what` names it in the error. */
export function parseKey(raw: string, what: string): Buffer {
  const text = raw.trim();
  const key = Buffer.from(text, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || key.length < 16) throw new Error(`${what} must be base64 of at least 16 bytes`);
  return key;
}

/** One key, no id file: the SIPHA_REPLICATION_KEY of a sidecar outside Kubernetes. */
export function keyringOf(key: Buffer): Keyring {
  return { sign: key, signId: 1, also: null, alsoId: null, witness: null };
}

/** Reads the key files of `dir`; throws with the file's name when one is missing or bad. */
export function readKeyDir(dir: string): Keyring {
  const read = (name: string): string | null => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  };
  const id = (name: string, def: number | null): number | null => {
    const raw = read(name);
    if (raw === null) return def;
    const n = Number(raw.trim());
    if (!Number.isInteger(n) || n < 1 || n > 2 ** 31) throw new Error(`${join(dir, name)}: expected a key id from 1 to 2^31`);
    return n;
  };
  const signRaw = read('hmac-key');
  if (signRaw === null) throw new Error(`${join(dir, 'hmac-key')} is missing`);
  const sign = parseKey(signRaw, join(dir, 'hmac-key'));
  const alsoRaw = read('hmac-key-also');
  const also = alsoRaw === null || alsoRaw.trim() === '' ? null : parseKey(alsoRaw, join(dir, 'hmac-key-also'));
  const signId = id('key-id', 1) as number;
  const alsoId = also === null ? null : id('key-id-also', null);
  if (also !== null && (alsoId === null || alsoId === signId)) {
    throw new Error(`${join(dir, 'key-id-also')}: a second key needs an id of its own`);
  }
  const witnessRaw = read('witness-key');
  const witness = witnessRaw === null ? null : parseKey(witnessRaw, join(dir, 'witness-key'));
  return { sign, signId, also, alsoId, witness };
}

/**
 * Reads the key directory again every `everyMs` and calls `changed` with a
 * keyring that differs from the last one. A read that fails (the kubelet
 * swapping the files, a bad edit) keeps the keys in use and says why once.
 */
export class KeyDirWatch {
  private timer: NodeJS.Timeout | null = null;
  private lastError = '';
  private current: Keyring;
  private readonly dir: string;
  private readonly changed: (k: Keyring) => void;
  private readonly log: Logger;
  private readonly everyMs: number;

  constructor(dir: string, current: Keyring, changed: (k: Keyring) => void, log: Logger, everyMs = 1000) {
    this.dir = dir;
    this.current = current;
    this.changed = changed;
    this.log = log;
    this.everyMs = everyMs;
  }

  start(): void {
    this.timer = setInterval(() => this.check(), this.everyMs);
    this.timer.unref();
  }

  check(): void {
    let next: Keyring;
    try {
      next = readKeyDir(this.dir);
    } catch (err) {
      const why = (err as Error).message;
      if (why !== this.lastError) this.log.error({ err }, 'key files unreadable: keeping the keys in use');
      this.lastError = why;
      return;
    }
    this.lastError = '';
    if (sameKeys(next, this.current)) return;
    this.log.warn({ from: keyIds(this.current), to: keyIds(next) }, 'pair keys changed');
    this.current = next;
    this.changed(next);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
