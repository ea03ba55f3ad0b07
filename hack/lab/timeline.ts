/**
 * The lab's failover as a picture: one PNG timeline, milliseconds from the
 * fault, that a person who has never seen sipha can read at a glance. Lanes:
 * the OPTIONS probes through the VIP (answered or lost), the SIP
 * retransmissions the clients had to make, and the pair's own milestones
 * (fault, detection, VIP + ARP, first answer). Drawn with Vega-Lite, turned
 * into SVG by Vega and into PNG by resvg (no browser, no canvas).
 */
import { writeFileSync } from 'node:fs';
import { Resvg } from '@resvg/resvg-js';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

export interface Timeline {
  title: string;
  /** What the reader should take away (one line, under the title). */
  subtitle: string;
  /** Probes through the VIP: when sent (ms from the fault) and whether answered. */
  probes: Array<{ t: number; answered: boolean }>;
  /** Requests the clients sent again (ms from the fault) and what they were. */
  retransmissions: Array<{ t: number; what: string }>;
  /** The pair's milestones (ms from the fault), in order. */
  milestones: Array<{ t: number; label: string }>;
  /** Shown window (ms from the fault). */
  fromMs: number;
  toMs: number;
}

const LANE_PROBES = 'OPTIONS probes via the VIP';
const LANE_RETX = 'SIP retransmissions';
const WIDTH = 1000;

const COLOR = {
  field: 'state',
  type: 'nominal' as const,
  title: null,
  scale: { domain: ['answered', 'lost', 'retransmitted'], range: ['#2ca02c', '#d62728', '#ff7f0e'] },
  legend: { orient: 'top' as const, labelFontSize: 13, symbolSize: 160, symbolType: 'square' },
};

/**
 * The probe and retransmission lanes over [from, to] ms: each probe a bar over
 * its 10 ms slot (green answered, red lost), each retransmission a bar of
 * `markMs` (wide enough to see in a long window).
 */
function lanes(t: Timeline, from: number, to: number, title: string, markMs: number) {
  const inside = <T extends { t: number }>(xs: T[]) => xs.filter((x) => x.t >= from - 10 && x.t <= to);
  const values = [
    ...inside(t.probes).map((p) => ({ t: p.t, t2: p.t + 9, lane: LANE_PROBES, state: p.answered ? 'answered' : 'lost' })),
    ...inside(t.retransmissions).map((r) => ({
      t: r.t,
      t2: r.t + markMs,
      lane: LANE_RETX,
      state: 'retransmitted',
      what: r.what,
    })),
  ];
  return {
    width: WIDTH,
    height: 80,
    title: { text: title, anchor: 'start' as const, fontSize: 14, fontWeight: 'normal' as const, color: '#333' },
    data: { values },
    mark: { type: 'bar' as const, clip: true, height: 26 },
    encoding: {
      x: { field: 't', type: 'quantitative' as const, title: null, scale: { domain: [from, to], nice: false } },
      x2: { field: 't2' },
      y: {
        field: 'lane',
        type: 'nominal' as const,
        title: null,
        scale: { domain: [LANE_PROBES, LANE_RETX] },
        axis: { labelFontSize: 13, labelLimit: 400 },
      },
      color: COLOR,
    },
  };
}

export function timelineSpec(t: Timeline): vegaLite.TopLevelSpec {
  // The story happens in the first tens of ms: the main panel zooms there, with the milestones.
  const last = Math.max(...t.milestones.map((m) => m.t));
  const zoomTo = Math.max(100, Math.ceil((last * 1.6 + 20) / 10) * 10);
  const zoomFrom = -Math.max(20, Math.round(zoomTo / 8));
  const milestones = t.milestones.map((m, i) => ({ ...m, row: i, text: `${m.label} (${m.t.toFixed(1)} ms)` }));
  const zx = { field: 't', type: 'quantitative' as const, scale: { domain: [zoomFrom, zoomTo], nice: false } };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    background: 'white',
    padding: 20,
    title: { text: t.title, subtitle: t.subtitle, fontSize: 22, subtitleFontSize: 15, anchor: 'start', offset: 14 },
    config: { font: 'DejaVu Sans', axis: { labelFontSize: 12, titleFontSize: 13 }, view: { stroke: '#ddd' } },
    spacing: 28,
    vconcat: [
      {
        ...lanes(t, zoomFrom, zoomTo, `Around the fault: ${zoomFrom} to ${zoomTo} ms`, 1),
      },
      {
        width: WIDTH,
        height: 30 * milestones.length,
        data: { values: milestones },
        layer: [
          {
            mark: { type: 'rule', strokeWidth: 1.5, color: '#888', strokeDash: [4, 3] },
            encoding: { x: { ...zx, axis: { title: 'milliseconds after the fault', grid: false } } },
          },
          {
            mark: { type: 'point', filled: true, size: 110, color: '#1f77b4' },
            encoding: { x: zx, y: { field: 'row', type: 'ordinal', axis: null } },
          },
          {
            mark: { type: 'text', align: 'left', dx: 10, fontSize: 14, fontWeight: 'bold' },
            encoding: { x: zx, y: { field: 'row', type: 'ordinal', axis: null }, text: { field: 'text' } },
          },
        ],
      },
      {
        ...lanes(t, t.fromMs, t.toMs, `The whole window: ${t.fromMs} to ${t.toMs} ms`, (t.toMs - t.fromMs) / 400),
        encoding: {
          ...lanes(t, t.fromMs, t.toMs, '', 1).encoding,
          x: {
            field: 't',
            type: 'quantitative',
            title: 'milliseconds after the fault',
            scale: { domain: [t.fromMs, t.toMs], nice: false },
          },
        },
      },
    ],
    resolve: { scale: { x: 'independent' } },
  };
}

/** Renders the timeline to a PNG file; returns its path. */
export async function writeTimelinePng(t: Timeline, path: string): Promise<string> {
  const { spec } = vegaLite.compile(timelineSpec(t));
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = new Resvg(svg, {
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
    fitTo: { mode: 'zoom', value: 1.5 },
  })
    .render()
    .asPng();
  writeFileSync(path, png);
  return path;
}
