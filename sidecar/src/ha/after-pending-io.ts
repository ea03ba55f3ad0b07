/**
 * Runs a verdict about silence only after the loop has read what arrived.
 * A thread that was busy (a descheduled heartbeat worker, a main thread under
 * load) finds the messages that came meanwhile still unread: its socket's
 * beats, or the worker's next message right behind the one being handled.
 * An immediate runs after the loop's poll for I/O; but when the thread was
 * stalled inside that poll, after its read, the immediate still comes too
 * early, so a verdict that comes late waits for one more poll, a bounded
 * number of times: a thread starved turn after turn must still decide.
 */

/** Longer than a loop turn of a thread that is not stalled. */
const STALL_MS = 2;

export function afterPendingIo(judge: () => void, retries: number): void {
  const askedAt = performance.now();
  setImmediate(() => {
    if (performance.now() - askedAt > STALL_MS && retries > 0) afterPendingIo(judge, retries - 1);
    else judge();
  });
}
