/**
 * The pair key's layout (decision 0012): the replication Secret's entries, as
 * the operator writes them and the sidecar reads them as files. One parser
 * for both, so the two can never disagree on which keys there are and which
 * one signs.
 *
 *   key-<id>     a key, by its id (a decimal number); every one present is accepted
 *   sign-id      the id of the key that signs (may be left out when there is one key)
 *   witness-key  the UDP arbiter's key, kept across rotations
 *   hmac-key     the key of a Secret made before key ids: key 1 (unless key-1 is there)
 */
export const SIGN_ID_ENTRY = 'sign-id';
export const WITNESS_KEY_ENTRY = 'witness-key';
export const LEGACY_KEY_ENTRY = 'hmac-key';
export const LINK_TOKEN_ENTRY = 'link-token';

/** The entry that holds key `id`. */
export const keyEntry = (id: number): string => `key-${id}`;

/** More keys than a rotation needs is a mistake in the Secret. */
export const MAX_KEYS = 2;

export interface KeyLayout {
  /** Each key's id and the entry holding it, by ascending id (hmac-key stands for key 1). */
  keys: Array<{ id: number; entry: string }>;
  /** The signing key's id. */
  signId: number;
}

/**
 * The layout of a Secret's (or key directory's) entry names, given sign-id's
 * text (null when there is none). Throws with what is wrong: no key, more
 * keys than a rotation needs, or a sign-id that is missing or names no key.
 */
export function keyLayout(entries: Iterable<string>, signText: string | null): KeyLayout {
  const byId = new Map<number, string>();
  let legacy = false;
  for (const name of entries) {
    const m = /^key-(\d{1,9})$/.exec(name);
    if (m) byId.set(Number(m[1]), name);
    else if (name === LEGACY_KEY_ENTRY) legacy = true;
  }
  if (legacy && !byId.has(1)) byId.set(1, LEGACY_KEY_ENTRY);
  const keys = [...byId.entries()].sort(([a], [b]) => a - b).map(([id, entry]) => ({ id, entry }));
  const ids = keys.map((k) => k.id);
  if (keys.length === 0) throw new Error('no key-<id> entry');
  if (keys.length > MAX_KEYS) throw new Error(`${keys.length} keys (${ids.join(', ')}); a rotation needs ${MAX_KEYS} at most`);
  const text = signText?.trim() ?? null;
  if (text === null) {
    if (keys.length > 1) throw new Error(`${SIGN_ID_ENTRY} is missing: which of keys ${ids.join(', ')} signs?`);
    return { keys, signId: ids[0] as number };
  }
  const signId = Number(text);
  if (!/^\d{1,9}$/.test(text) || !byId.has(signId))
    throw new Error(`${SIGN_ID_ENTRY}=${text} names no key beside it (${ids.join(', ')})`);
  return { keys, signId };
}
