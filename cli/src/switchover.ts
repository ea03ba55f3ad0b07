/**
 * `kubectl sipha switchover NAME --to <ordinal|pod>`: asks for the planned
 * switchover the operator implements (the sipha.io/switchover annotation on
 * the SipHaPair, decision 0006) and waits for the operator's answer, an Event
 * on the pair: SwitchoverDone / SwitchoverNotNeeded (exit 0) or
 * SwitchoverRefused (exit 1, with the reason); no answer within the timeout:
 * exit 1. Only Events that did not exist before the request count.
 */
import { SWITCHOVER_ANNOTATION } from '../../contract/names.ts';
import { UsageError } from './args.ts';
import type { Client } from './client.ts';
import { requestOnPair } from './pair-request.ts';

const ANSWERS = new Set(['SwitchoverDone', 'SwitchoverNotNeeded', 'SwitchoverRefused']);

/** "1", "sip-edge-1" -> "1"; anything else is a usage error. */
export function targetOrdinal(pair: string, to: string): string {
  if (to === '0' || to === '1') return to;
  if (to === `${pair}-0` || to === `${pair}-1`) return to.slice(-1);
  throw new UsageError(`--to must be 0, 1, ${pair}-0 or ${pair}-1 (got ${to})`);
}

export interface SwitchoverResult {
  ok: boolean;
  message: string;
}

export async function switchover(client: Client, pair: string, to: string, timeoutMs: number): Promise<SwitchoverResult> {
  const ordinal = targetOrdinal(pair, to);
  const req = await requestOnPair(client, pair, SWITCHOVER_ANNOTATION, ordinal);
  if (req.pending !== undefined)
    return { ok: false, message: `a switchover to ${pair}-${req.pending} is already asked for; wait for it` };
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const answer = (await req.newEvents()).find((e) => ANSWERS.has(e.reason ?? ''));
    if (answer) return { ok: answer.reason !== 'SwitchoverRefused', message: `${answer.reason}: ${answer.message ?? ''}` };
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    ok: false,
    message: `no answer from the operator within ${timeoutMs / 1000} s (the request stays on the pair: kubectl annotate shp ${pair} ${SWITCHOVER_ANNOTATION}- to withdraw it)`,
  };
}
