/** Small helpers for processes started in bed hosts. */
import type { ChildProcess } from 'node:child_process';

/** Collects a child's output (bounded) and resolves when a line matches. */
export function watchOutput(
  child: ChildProcess,
  keepBytes = 256 << 10,
): { text: () => string; waitFor: (re: RegExp, ms: number) => Promise<void> } {
  let buf = '';
  const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
  const onData = (d: Buffer) => {
    buf += d.toString('utf8');
    if (buf.length > keepBytes) buf = buf.slice(buf.length - keepBytes);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i] as (typeof waiters)[number];
      if (w.re.test(buf)) {
        waiters.splice(i, 1);
        w.resolve();
      }
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return {
    text: () => buf,
    waitFor: (re, ms) =>
      new Promise<void>((resolve, reject) => {
        if (re.test(buf)) return resolve();
        const timer = setTimeout(
          () => reject(new Error(`timed out after ${ms} ms waiting for ${re}; output:\n${buf.slice(-3000)}`)),
          ms,
        );
        const exitHandler = () => reject(new Error(`process exited while waiting for ${re}; output:\n${buf.slice(-3000)}`));
        child.once('exit', exitHandler);
        waiters.push({
          re,
          resolve: () => {
            clearTimeout(timer);
            child.off('exit', exitHandler);
            resolve();
          },
        });
      }),
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns true or `ms` passes; `explain` adds what the failure message should show. */
export async function until(
  check: () => boolean | Promise<boolean>,
  ms: number,
  what: string,
  explain?: () => string,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${ms} ms: ${what}${explain ? `\n${explain()}` : ''}`);
}
