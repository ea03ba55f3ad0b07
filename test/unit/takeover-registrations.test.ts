/**
 * The sidecar's takeover report (issue 11 item 3): a master report carries the
 * registrations held when it began serving, read once per role change, and
 * lands on the pod as an annotation next to the role label.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type RoleReport, rolePatch } from '../../sidecar/src/kube/role-reporter.ts';
import { withTakeoverRegistrations } from '../../sidecar/src/kube/takeover-registrations.ts';

describe('sidecar: registrations held at takeover', () => {
  it('reads the count once per role change, so a re-sent report keeps the figure of the takeover', () => {
    const sent: RoleReport[] = [];
    let held = 1000;
    const report = withTakeoverRegistrations(
      (r) => sent.push(r),
      () => held,
    );
    const takeover: RoleReport = { role: 'master', term: 2, reason: 'peer-heartbeat-lost', since: 't1', gapMs: 40 };
    report({ ...takeover, inSync: false });
    held = 1003; // registrations kept arriving after the takeover
    report({ ...takeover, inSync: true }); // the in-sync state changed: same role change, re-sent
    report({ role: 'backup', term: 3, reason: 'peer-is-master', since: 't2' });
    report({ role: 'master', term: 4, reason: 'peer-resigned', since: 't3' });
    assert.deepEqual(
      sent.map((r) => [r.role, r.term, r.registrations]),
      [
        ['master', 2, 1000],
        ['master', 2, 1000],
        ['backup', 3, undefined],
        ['master', 4, 1003],
      ],
    );
  });

  it('writes the count as sipha.io/takeover-registrations in the same patch as the role label', () => {
    const p = rolePatch({ role: 'master', term: 2, reason: 'x', since: 's', gapMs: 40.4, registrations: 1000 }, new Date(0));
    assert.equal(p.metadata.labels['sipha.io/role'], 'master');
    assert.equal(p.metadata.annotations['sipha.io/takeover-registrations'], '1000');
    assert.equal(p.metadata.annotations['sipha.io/takeover-gap-ms'], '40');
    const b = rolePatch({ role: 'backup', term: 2, reason: 'x' }, new Date(0));
    assert.equal(b.metadata.annotations['sipha.io/takeover-registrations'], undefined);
  });
});
