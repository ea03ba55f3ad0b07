/**
 * Adds to each master report the registrations the sidecar held when it began
 * serving (what it took over), for the operator's status.history. Read once
 * per role change: a report re-sent later for the same role (the in-sync state
 * changed) keeps the figure of the moment of the takeover, not of now.
 */
import type { RoleReport } from './role-reporter.ts';

export function withTakeoverRegistrations(
  report: (r: RoleReport) => void,
  registrationsHeld: () => number,
): (r: RoleReport) => void {
  let change = '';
  let held = 0;
  return (r) => {
    const key = `${r.role} ${r.term} ${r.since ?? ''}`;
    if (key !== change) {
      change = key;
      held = registrationsHeld();
    }
    report(r.role === 'master' ? { ...r, registrations: held } : r);
  };
}
