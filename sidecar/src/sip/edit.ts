/**
 * Edits that leave untouched bytes untouched: a message is re-emitted as a
 * list of slices of the original Buffer plus the few new bytes, ready for
 * `dgram.send(list)` or a corked `socket.write` per slice (one writev).
 */
import { indexOfCrlf } from './chars.ts';
import type { SipMessage } from './message.ts';

export interface Edit {
  /** Offset in msg.buf where the edit starts. */
  at: number;
  /** Bytes removed from `at` (0 for a pure insertion). */
  remove: number;
  /** Bytes inserted at `at`. */
  insert?: Buffer;
}

/** Applies non-overlapping edits (any order) and returns the slices. */
export function applyEdits(msg: SipMessage, edits: Edit[]): Buffer[] {
  if (edits.length === 0) return [msg.buf];
  if (edits.length > 1) edits.sort((a, b) => a.at - b.at);
  const out: Buffer[] = [];
  let p = 0;
  for (const e of edits) {
    if (e.at > p) out.push(msg.buf.subarray(p, e.at));
    if (e.insert !== undefined && e.insert.length > 0) out.push(e.insert);
    p = Math.max(p, e.at + e.remove);
  }
  if (p < msg.buf.length) out.push(msg.buf.subarray(p));
  return out;
}

/** Offset just after the start line's CRLF: where a new first header goes. */
export function afterStartLine(msg: SipMessage): number {
  return indexOfCrlf(msg.buf, 0) + 2;
}

/** Edit that removes header row `i` entirely. */
export function removeHeader(msg: SipMessage, i: number): Edit {
  const [s, e] = msg.lineRange(i);
  return { at: s, remove: e - s };
}

export function totalLength(slices: Buffer[]): number {
  let n = 0;
  for (const s of slices) n += s.length;
  return n;
}
