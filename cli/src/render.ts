/**
 * What `kubectl sipha status` and `history` print, from the objects alone
 * (pure: the caller reads the pair, its pods and the sidecars' lag).
 */
import type { V1Pod } from '@kubernetes/client-node';
import {
  IN_SYNC_ANNOTATION,
  ROLE_LABEL,
  ROLE_REASON_ANNOTATION,
  ROLE_SINCE_ANNOTATION,
  TERM_ANNOTATION,
} from '../../contract/names.ts';
import type { HistoryEntry, SipHaPair } from '../../contract/siphapair.ts';
import { age, table } from './table.ts';

/** One line per pair: `kubectl sipha status` with no name. */
export function pairsTable(pairs: SipHaPair[], now: Date): string {
  if (pairs.length === 0) return 'No SipHaPairs found.';
  return table(
    ['NAME', 'PHASE', 'MASTER', 'BACKUP', 'TERM', 'IN SYNC', 'FAILOVERS', 'LAST FAILOVER'],
    pairs.map((p) => {
      const s = p.status ?? {};
      const last = s.lastFailover;
      return [
        p.metadata.name,
        s.phase ?? '-',
        s.master ?? '-',
        s.backup ?? '-',
        String(s.term ?? '-'),
        conditionWord(p, 'Replicating'),
        String(s.failoverCount ?? 0),
        last ? `${age(last.time, now)} ago (${last.from ?? '?'} -> ${last.to}, ${last.reason})` : '-',
      ];
    }),
  );
}

/** Replication lag p99 per pod in ms (the sidecar's sipha_replication_lag_ms{quantile="0.99"}); absent: unknown. */
export type LagByPod = Map<string, number>;

/** The full picture of one pair: `kubectl sipha status NAME`. */
export function pairStatus(pair: SipHaPair, pods: V1Pod[], lag: LagByPod, now: Date): string {
  const s = pair.status ?? {};
  const ready = s.conditions?.find((c) => c.type === 'Ready');
  const lines = [
    `Pair:       ${pair.metadata.namespace}/${pair.metadata.name}`,
    `Phase:      ${s.phase ?? 'unknown'}${ready?.message ? ` (${ready.message})` : ''}`,
    `VIP:        ${pair.spec.vip.address} (${pair.spec.vip.mode})`,
    `Term:       ${s.term ?? '-'}`,
    `Failovers:  ${s.failoverCount ?? 0}`,
    '',
    table(
      ['POD', 'ROLE', 'TERM', 'IN SYNC', 'LAG P99', 'ROLE SINCE', 'REASON', 'NODE'],
      [...pods]
        .sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''))
        .map((p) => {
          const ann = p.metadata?.annotations ?? {};
          const name = p.metadata?.name ?? '';
          const ms = lag.get(name);
          return [
            name,
            p.metadata?.labels?.[ROLE_LABEL] ?? '-',
            ann[TERM_ANNOTATION] ?? '-',
            ann[IN_SYNC_ANNOTATION] === 'true' ? 'yes' : ann[IN_SYNC_ANNOTATION] === 'false' ? 'NO' : '-',
            ms === undefined ? '-' : `${ms} ms`,
            ann[ROLE_SINCE_ANNOTATION] ? `${age(ann[ROLE_SINCE_ANNOTATION], now)} ago` : '-',
            ann[ROLE_REASON_ANNOTATION] ?? '-',
            p.spec?.nodeName ?? '-',
          ];
        }),
    ),
    '',
    table(
      ['CONDITION', 'STATUS', 'REASON', 'MESSAGE'],
      (s.conditions ?? []).map((c) => [c.type, c.status, c.reason, c.message]),
    ),
  ];
  const recent = (s.history ?? []).slice(-3);
  lines.push('', 'Last role changes (kubectl sipha history for all):');
  lines.push(recent.length ? historyTable(recent) : '  none recorded');
  return lines.join('\n');
}

/** status.history oldest first, as `kubectl sipha history NAME` prints it. */
export function historyTable(history: HistoryEntry[]): string {
  return table(
    ['TIME', 'TERM', 'FROM', 'TO', 'REASON', 'DETECT->SERVING', 'WAS IN SYNC', 'REGISTRATIONS'],
    history.map((e) => [
      e.time,
      String(e.term),
      e.from ?? '(first)',
      e.to,
      e.reason,
      e.detectToServingMs === undefined ? '-' : `${e.detectToServingMs} ms`,
      e.wasInSync === undefined ? '-' : e.wasInSync ? 'yes' : 'NO',
      e.registrations === undefined ? '-' : String(e.registrations),
    ]),
  );
}

function conditionWord(p: SipHaPair, type: string): string {
  const c = p.status?.conditions?.find((x) => x.type === type);
  return c ? (c.status === 'True' ? 'yes' : 'NO') : '-';
}
