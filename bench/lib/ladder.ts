/**
 * Max rate at < 1% failures: sipp at rising rates, set-ups alternated step by
 * step so the machine's noise hits them alike; each set-up stops at its
 * first failed step. A step passes when < 1% of its calls fail (or never
 * finish) and the system kept up with the target rate.
 */

import { readSip, startCapture, transactionLatenciesUs } from '../../test/lib/capture.ts';
import type { Host, NetBed } from '../../test/lib/netbed.ts';
import { runSipp, type SippRun } from '../../test/lib/sipp.ts';
import { round } from './report.ts';

export interface LadderResult<M extends string> {
  best: Record<M, number>;
  rows: Array<Array<string | number>>;
}

export async function maxRateLadder<M extends string>(
  bed: NetBed,
  client: Host,
  opts: {
    label: string;
    targets: Record<M, string>;
    rates: number[];
    stepS: number;
    base: Omit<SippRun, 'calls' | 'rate' | 'target'>;
  },
): Promise<LadderResult<M>> {
  const modes = Object.keys(opts.targets) as M[];
  const best = Object.fromEntries(modes.map((m) => [m, 0])) as Record<M, number>;
  const alive = new Set<M>(modes);
  const rows: Array<Array<string | number>> = [];
  for (const rate of opts.rates) {
    for (const mode of modes) {
      if (!alive.has(mode)) continue;
      const calls = rate * opts.stepS;
      const r = await runSipp(bed, client, {
        ...opts.base,
        target: opts.targets[mode],
        rate,
        calls,
        limit: Math.max(rate * 3, 100),
        timeoutS: 20,
      });
      const total = r.successful + r.failed;
      const failPct = total === 0 ? 100 : (100 * (r.failed + (calls - total))) / calls;
      // REGISTER: sipp's own count of requests created per second falls behind
      // the target when the system cannot keep up. Calls last ~0.5 s, which that
      // count (total / elapsed) would also charge: for calls, the system keeps up
      // when the whole step ends within its length + call length + 2 s of slack.
      const achieved =
        opts.base.scenario === 'uac-call.xml' ? calls / Math.max(opts.stepS, r.elapsedMs / 1000 - 0.5 - 2) : r.callRate;
      const pass = failPct < 1 && achieved >= 0.9 * rate;
      rows.push([opts.label, mode, rate, Math.round(achieved), round(failPct, 2), pass ? 'pass' : 'FAIL']);
      console.log(
        `${opts.label} ${mode} ${rate}/s: achieved ${Math.round(achieved)}/s, failed ${round(failPct, 2)}% -> ${pass ? 'pass' : 'FAIL'}`,
      );
      if (pass) best[mode] = rate;
      else alive.delete(mode);
    }
    if (alive.size === 0) break;
  }
  return { best, rows };
}

/**
 * REGISTER response times (µs) seen on the client's wire: 2000 REGISTERs at
 * 500/s under a capture, each paired with its final response.
 */
export async function registerLatenciesUs(
  bed: NetBed,
  client: Host,
  target: string,
  users: string[],
  filter: string,
): Promise<number[]> {
  const cap = await startCapture(bed, client, filter);
  await runSipp(bed, client, { scenario: 'register.xml', target, calls: 2000, rate: 500, users, timeoutS: 30 });
  return transactionLatenciesUs(readSip(await cap.stop()), client.ip, 'REGISTER');
}
