/**
 * The pair's keys (issue 9 item 4, decision 0012). In a cluster they are
 * files of the replication Secret, mounted into the sidecar container alone:
 * never an environment variable, which /proc/<pid>/environ shows to every
 * container of a pod that shares its process namespace. When the operator
 * rotates the key the kubelet rewrites the files in place, so the sidecar
 * reads them again every second; nothing restarts.
 *
 * Files (the Secret's entries), each key base64 of at least 16 bytes:
 *   key-<id>     a key, by its id (a decimal number); every one present is accepted
 *   sign-id      the id of the key this side signs with (may be left out when there is one key)
 *   witness-key  the UDP arbiter's key (witnessKey of the pair's first key), kept across
 *                rotations so the arbiter never needs a new one (optional)
 *   hmac-key     the key of a Secret made before key ids: key 1 (unless key-1 is there)
 * A rotation is three merge patches of the Secret, none of which needs to read
 * it (the operator has no right to): add key-<n+1>; set sign-id to n+1 once
 * both sides hold it; remove key-<n> once both sign with n+1.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.ts';

export interface Keyring {
  /** The key this side signs heartbeats and handshakes with. */
  readonly sign: Buffer;
  readonly signId: number;
  /** Accepted as well as `sign` (the next key, then the previous one, during a rotation). */
  readonly others: ReadonlyArray<{ readonly id: number; readonly key: Buffer }>;
  /** The UDP arbiter's key as given; null: derive it from `sign` at start. */
  readonly witness: Buffer | null;
}

/** More keys than a rotation needs is a mistake in the Secret, not a keyring. */
const MAX_KEYS = 3;

/** Every key a message may be signed with, the signing key first. */
export function acceptedKeys(k: Keyring): Buffer[] {
  return [k.sign, ...k.others.map((o) => o.key)];
}

/** What the sidecar reports on its pod: the signing id, then the other ids held ("2" or "2,1"; KEYS_ANNOTATION). */
export function keyIds(k: Keyring): string {
  return [k.signId, ...k.others.map((o) => o.id)].join(',');
}

export function sameKeys(a: Keyring, b: Keyring): boolean {
  const ka = acceptedKeys(a);
  const kb = acceptedKeys(b);
  return keyIds(a) === keyIds(b) && ka.length === kb.length && ka.every((k, i) => k.equals(kb[i] as Buffer));
}

/** A key from its base64 text; `what` names it in the error. */
export function parseKey(raw: string, what: string): Buffer {
  const text = raw.trim();
  const key = Buffer.from(text, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || key.length < 16) throw new Error(`${what} must be base64 of at least 16 bytes`);
  return key;
}

/** One key, no id: the SIPHA_REPLICATION_KEY of a sidecar outside Kubernetes. */
export function keyringOf(key: Buffer): Keyring {
  return { sign: key, signId: 1, others: [], witness: null };
}

/** Reads the key files of `dir`; throws with the file's name when one is missing or bad. */
export function readKeyDir(dir: string): Keyring {
  const keys = new Map<number, Buffer>();
  let signText: string | null = null;
  let witness: Buffer | null = null;
  for (const name of readdirSync(dir)) {
    const m = /^key-(\d{1,9})$/.exec(name);
    const path = join(dir, name);
    if (m) keys.set(Number(m[1]), parseKey(readFileSync(path, 'utf8'), path));
    else if (name === 'sign-id') signText = readFileSync(path, 'utf8').trim();
    else if (name === 'witness-key') witness = parseKey(readFileSync(path, 'utf8'), path);
  }
  const legacy = join(dir, 'hmac-key');
  if (!keys.has(1) && existsSync(legacy)) keys.set(1, parseKey(readFileSync(legacy, 'utf8'), legacy));
  if (keys.size === 0) throw new Error(`${dir}: no key-<id> file`);
  if (keys.size > MAX_KEYS) throw new Error(`${dir}: ${keys.size} keys; a rotation needs at most 2`);
  const ids = [...keys.keys()].sort((x, y) => x - y);
  let signId: number;
  if (signText === null) {
    if (ids.length > 1) throw new Error(`${join(dir, 'sign-id')} is missing: which of keys ${ids.join(', ')} signs?`);
    signId = ids[0] as number;
  } else {
    signId = Number(signText);
    if (!keys.has(signId)) throw new Error(`${join(dir, 'sign-id')}=${signText}: no key-${signText} beside it`);
  }
  const others = ids.filter((i) => i !== signId).map((id) => ({ id, key: keys.get(id) as Buffer }));
  return { sign: keys.get(signId) as Buffer, signId, others, witness };
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
