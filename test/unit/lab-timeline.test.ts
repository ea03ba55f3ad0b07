/**
 * The lab's failover picture (hack/lab/timeline.ts): a real PNG rendered by
 * Vega and resvg from the figures the lab measured, zoomed where the outage is.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type Timeline, timelineSpec, writeTimelinePng } from '../../hack/lab/timeline.ts';

const story: Timeline = {
  title: 'sipha: failover of a pair',
  subtitle: 'Clients saw 37 ms without answers.',
  probes: Array.from({ length: 600 }, (_, i) => ({ t: -3000 + i * 10, answered: i < 300 || i > 303 })),
  retransmissions: [{ t: 120, what: 'INVITE' }],
  milestones: [
    { t: 0, label: 'fault' },
    { t: 10, label: 'backup takes over' },
    { t: 15.4, label: 'VIP' },
    { t: 37.1, label: 'first answer' },
  ],
  fromMs: -3000,
  toMs: 3000,
};

describe('lab timeline picture', () => {
  it('zooms on the outage, shows every milestone, and renders to a PNG a person can read', async () => {
    const spec = JSON.stringify(timelineSpec(story));
    assert.match(spec, /Around the fault: -20 to 100 ms/);
    for (const m of story.milestones) assert.ok(spec.includes(`${m.label} (${m.t.toFixed(1)} ms)`), m.label);
    assert.ok(spec.includes('"state":"lost"') && spec.includes('"state":"retransmitted"'));
    const dir = mkdtempSync(join(tmpdir(), 'sipha-timeline-'));
    try {
      const png = readFileSync(await writeTimelinePng(story, join(dir, 't.png')));
      assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
      const [w, h] = [png.readUInt32BE(16), png.readUInt32BE(20)];
      assert.ok(w >= 1500 && h >= 700, `${w} x ${h}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
