/**
 * status.history: the pair's role changes, one entry each time a pod becomes
 * master at a new term, the last HISTORY_LIMIT kept. Pure: the previous
 * status and the master seen now in, the new list and the added entry out.
 *
 * The master before a change is the last one known (status.master, else the
 * last entry's), so a change seen across a moment with no master (the old
 * master resigned, the operator reconciled, then the backup took over) is
 * still a failover from the old master, not a first election.
 */
import { HISTORY_LIMIT } from '../../contract/names.ts';
import type { HistoryEntry, SipHaPairStatus } from '../../contract/siphapair.ts';
import type { PodView } from './status.ts';

export function lastKnownMaster(prev: SipHaPairStatus): string | undefined {
  return prev.master ?? prev.history?.at(-1)?.to;
}

export function nextHistory(
  prev: SipHaPairStatus,
  master: PodView | undefined,
  now: Date,
): { history: HistoryEntry[]; added: HistoryEntry | null } {
  const history = prev.history ?? [];
  const unchanged = { history, added: null };
  if (!master) return unchanged;
  const last = history.at(-1);
  if (last && last.to === master.name && last.term === master.term) return unchanged;
  // A status written before history existed: its master is not news.
  if (!last && prev.master === master.name) return unchanged;

  const from = lastKnownMaster(prev);
  const wasInSync = prev.backup === master.name ? syncOf(prev) : undefined;
  const entry: HistoryEntry = {
    time: master.since ?? now.toISOString(),
    term: master.term,
    ...(from !== undefined ? { from } : {}),
    to: master.name,
    reason: master.reason ?? 'unknown',
    ...(master.gapMs !== undefined ? { detectToServingMs: master.gapMs } : {}),
    ...(wasInSync !== undefined ? { wasInSync } : {}),
    ...(master.registrations !== undefined ? { registrations: master.registrations } : {}),
    change: '',
  };
  entry.change = sentence(entry);
  return { history: [...history, entry].slice(-HISTORY_LIMIT), added: entry };
}

/** What the Replicating condition said of the backup before the change (also across a moment with no master); else unknown. */
function syncOf(prev: SipHaPairStatus): boolean | undefined {
  const reason = prev.conditions?.find((c) => c.type === 'Replicating')?.reason;
  if (reason === 'BackupInSync' || reason === 'NoMasterBackupInSync') return true;
  if (reason === 'BackupOutOfSync' || reason === 'NoMasterBackupOutOfSync') return false;
  return undefined;
}

/** The change as `kubectl describe` and `kubectl sipha history` tell it. */
export function sentence(e: HistoryEntry): string {
  const head =
    e.from === undefined
      ? `${e.to} became master at term ${e.term}`
      : e.from === e.to
        ? `${e.to} became master again at term ${e.term}`
        : `${e.to} took over from ${e.from} at term ${e.term}`;
  const facts = [
    e.detectToServingMs !== undefined ? `serving ${e.detectToServingMs} ms after detection` : null,
    e.wasInSync === true ? 'it was an in-sync backup' : e.wasInSync === false ? 'it was NOT in sync' : null,
    e.registrations !== undefined ? `holding ${e.registrations} registrations` : null,
  ].filter((f) => f !== null);
  return `${head} (${e.reason})${facts.length ? `: ${facts.join(', ')}` : ''}`;
}
