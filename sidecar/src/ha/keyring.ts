/**
 * The pair's keys (issue 9 item 4, decision 0012). In a cluster they are
 * files of the replication Secret, mounted into the sidecar container alone:
 * never an environment variable, which /proc/<pid>/environ shows to every
 * container of a pod that shares its process namespace. When the operator
 * rotates the key the kubelet rewrites the files in place, so the sidecar
 * reads them again every second; nothing restarts.
 *
 * Files: the Secret's entries (contract/key-files.ts), each key base64 of at least
 * 16 bytes. A rotation is three merge patches of the Secret, none of which needs to read
 * it (the operator has no right to): add key-<n+1>; set sign-id to n+1 once
 * both sides hold it; remove key-<n> once both sign with n+1.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type KeyLayout, keyLayout, SIGN_ID_ENTRY, WITNESS_KEY_ENTRY } from '../../../contract/key-files.ts';
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

/** Reads the key files of `dir` (their layout: contract/key-files.ts); throws with what is missing or bad. */
export function readKeyDir(dir: string): Keyring {
  const names = readdirSync(dir);
  let layout: KeyLayout;
  try {
    layout = keyLayout(names, names.includes(SIGN_ID_ENTRY) ? readFileSync(join(dir, SIGN_ID_ENTRY), 'utf8') : null);
  } catch (err) {
    throw new Error(`${dir}: ${(err as Error).message}`);
  }
  const read = (entry: string) => parseKey(readFileSync(join(dir, entry), 'utf8'), join(dir, entry));
  const signing = layout.keys.find((k) => k.id === layout.signId) as { entry: string };
  return {
    sign: read(signing.entry),
    signId: layout.signId,
    others: layout.keys.filter((k) => k.id !== layout.signId).map((k) => ({ id: k.id, key: read(k.entry) })),
    witness: names.includes(WITNESS_KEY_ENTRY) ? read(WITNESS_KEY_ENTRY) : null,
  };
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
