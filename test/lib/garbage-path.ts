import { fileURLToPath } from 'node:url';

/** Path of the malformed-datagram sender, to run inside a bed host. */
export const GARBAGE_SCRIPT = fileURLToPath(new URL('./garbage.ts', import.meta.url));
