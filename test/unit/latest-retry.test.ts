/** LatestRetry: the role reporter's delivery rules, with a scripted `send`. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LatestRetry } from '../../sidecar/src/kube/latest-retry.ts';
import { until } from '../lib/procs.ts';

const opts = { attemptTimeoutMs: 100, minBackoffMs: 10, maxBackoffMs: 40, random: () => 0.5 };

describe('LatestRetry', () => {
  it('retries a failed value until it lands, then goes idle', async () => {
    let calls = 0;
    const delivered: number[] = [];
    const r = new LatestRetry<number>(
      async () => {
        if (++calls < 4) throw new Error('refused');
      },
      { ...opts, delivered: (v) => delivered.push(v) },
    );
    r.offer(7);
    await until(() => delivered.length === 1, 2000, 'delivered');
    assert.equal(calls, 4);
    assert.deepEqual(delivered, [7]);
    assert.equal(r.busy, false);
  });

  it('a newer value replaces a pending one: the stale one is never sent again', async () => {
    const sent: number[] = [];
    let fail = true;
    const r = new LatestRetry<number>(async (v) => {
      sent.push(v);
      if (fail) throw new Error('down');
    }, opts);
    r.offer(1);
    await until(() => sent.length >= 2, 2000, 'two attempts of 1');
    r.offer(2);
    r.offer(3);
    fail = false;
    await until(() => !r.busy, 2000, 'idle');
    assert.deepEqual(
      sent.filter((v) => v !== 1),
      [3],
      'only the newest was sent after the replacement',
    );
    assert.equal(sent.at(-1), 3);
  });

  it('cuts off an attempt that hangs (its signal aborts) and retries', async () => {
    const signals: AbortSignal[] = [];
    const failures: string[] = [];
    let hang = true;
    const r = new LatestRetry<string>(
      (_v, signal) => {
        signals.push(signal);
        return hang ? new Promise(() => {}) : Promise.resolve();
      },
      { ...opts, failed: (_v, err) => failures.push((err as Error).message) },
    );
    r.offer('master');
    await until(() => failures.length >= 2, 2000, 'two timeouts');
    assert.match(failures[0] as string, /timed out after 100 ms/);
    assert.equal(signals[0]?.aborted, true, 'the hung attempt was told to abort');
    hang = false;
    await until(() => !r.busy, 2000, 'delivered after the hang');
  });

  it('never throws or rejects: a send that throws synchronously is a failed attempt', async () => {
    let n = 0;
    const r = new LatestRetry<number>(
      (() => {
        if (++n < 3) throw new Error('sync');
        return Promise.resolve();
      }) as (v: number) => Promise<void>,
      {
        ...opts,
        failed: () => {
          throw new Error('a throwing callback does not stop delivery either');
        },
      },
    );
    assert.doesNotThrow(() => r.offer(1));
    await until(() => !r.busy, 2000, 'delivered');
    assert.equal(n, 3);
  });

  it('backs off with jitter, doubling up to the ceiling, and resets after a success', async () => {
    const at: number[] = [];
    let fail = 6;
    const r = new LatestRetry<number>(
      async () => {
        at.push(performance.now());
        if (fail-- > 0) throw new Error('no');
      },
      { attemptTimeoutMs: 100, minBackoffMs: 20, maxBackoffMs: 80, random: () => 0.5 },
    );
    const gapsOf = (xs: number[]) => xs.slice(1).map((t, i) => t - (xs[i] as number));
    // random() = 0.5 gives exactly the base (timers fire late, never early; the slack is for a busy CPU).
    const check = (gaps: number[], want: number[]) =>
      gaps.forEach((g, i) => {
        assert.ok(g >= (want[i] as number) - 2 && g < (want[i] as number) + 150, `gap ${i}: ${g} ms, want ~${want[i]}`);
      });
    r.offer(1);
    await until(() => !r.busy, 5000, 'delivered');
    assert.equal(at.length, 7);
    check(gapsOf(at), [20, 40, 80, 80, 80, 80]);
    at.length = 0;
    fail = 1;
    r.offer(2);
    await until(() => !r.busy, 5000, 'delivered again');
    check(gapsOf(at), [20]);
  });

  it('stop() drops what is pending and aborts the attempt in flight', async () => {
    let signal: AbortSignal | undefined;
    let sends = 0;
    const r = new LatestRetry<number>(
      (_v, s) => {
        sends++;
        signal = s;
        return new Promise(() => {});
      },
      { ...opts, attemptTimeoutMs: 10_000 },
    );
    r.offer(1);
    await until(() => signal !== undefined, 1000, 'attempt started');
    r.stop();
    assert.equal(signal?.aborted, true);
    r.offer(2);
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(sends, 1);
  });
});
