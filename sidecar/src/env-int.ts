/**
 * Reading a whole number from the environment, shared by the sidecar's and the
 * witness's settings: a bad value stops the process with the variable's name.
 */
export type Env = Record<string, string | undefined>;

/** `env[name]` as an integer from `min` to `max`; `def` when unset or empty. */
export function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name}=${raw}: expected an integer from ${min} to ${max}`);
  }
  return n;
}
