/**
 * FlapLog (sidecar/src/ha/flap-log.ts): a yes/no condition's changes said at
 * most once per period, the state it settled in said when the period is up.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FlapLog } from '../../sidecar/src/ha/flap-log.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function recorder(everyMs: number) {
  const lines: Array<{ state: boolean; unsaid: number }> = [];
  const flap = new FlapLog(false, (state, unsaid) => lines.push({ state, unsaid }), everyMs);
  return { lines, flap };
}

describe('FlapLog', () => {
  it('says the first change at once', () => {
    const { lines, flap } = recorder(200);
    flap.set(true);
    assert.deepEqual(lines, [{ state: true, unsaid: 0 }]);
    flap.reset(false);
  });

  it('a value set again is no change', () => {
    const { lines, flap } = recorder(200);
    flap.set(false);
    assert.deepEqual(lines, []);
  });

  it('changes within the period: one line when it is up, with the state they left and how many went unsaid', async () => {
    const { lines, flap } = recorder(200);
    flap.set(true); // said
    flap.set(false);
    flap.set(true);
    flap.set(false); // settled: timely, after 3 changes (2 of them unsaid beside the one said)
    assert.equal(lines.length, 1, 'nothing more within the period');
    await sleep(300);
    assert.deepEqual(lines, [
      { state: true, unsaid: 0 },
      { state: false, unsaid: 2 },
    ]);
  });

  it('back where the last line left it: still said when the period is up (it flapped meanwhile)', async () => {
    const { lines, flap } = recorder(200);
    flap.set(true);
    flap.set(false);
    flap.set(true);
    await sleep(300);
    assert.deepEqual(lines, [
      { state: true, unsaid: 0 },
      { state: true, unsaid: 2 },
    ]);
  });

  it('a change after a quiet period is said at once again', async () => {
    const { lines, flap } = recorder(100);
    flap.set(true);
    await sleep(150);
    flap.set(false);
    assert.deepEqual(lines, [
      { state: true, unsaid: 0 },
      { state: false, unsaid: 0 },
    ]);
  });

  it('reset drops the pending line and starts from the state given', async () => {
    const { lines, flap } = recorder(100);
    flap.set(true);
    flap.set(false);
    flap.reset(false);
    await sleep(150);
    assert.deepEqual(lines, [{ state: true, unsaid: 0 }], 'the pending line was dropped');
    flap.set(true);
    assert.equal(lines.length, 2, 'a change after the reset is said (the period from the last line is over)');
  });
});
