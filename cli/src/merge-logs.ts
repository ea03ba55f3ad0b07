/**
 * Both sidecars' logs as one story: pino JSON lines ordered by their `time`
 * (epoch ms, or an ISO string), each prefixed with its pod the way
 * `kubectl logs --prefix` does. A line that is not JSON (a stack trace, the
 * runtime's own output) keeps its place after the line before it in its pod.
 * Lines of equal time keep their pods' order (stable).
 */
export interface PodLog {
  pod: string;
  container: string;
  text: string;
}

interface Line {
  prefix: string;
  text: string;
  time: number;
  pod: number;
  index: number;
}

export function lineTime(text: string): number | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    const t = (JSON.parse(text) as { time?: unknown }).time;
    if (typeof t === 'number' && Number.isFinite(t)) return t;
    if (typeof t === 'string' && Number.isFinite(Date.parse(t))) return Date.parse(t);
  } catch {}
  return undefined;
}

export function mergeLogs(logs: PodLog[]): string[] {
  const lines: Line[] = [];
  logs.forEach((log, pod) => {
    let time = Number.NEGATIVE_INFINITY;
    log.text.split('\n').forEach((text, index) => {
      if (text === '') return;
      time = lineTime(text) ?? time;
      lines.push({ prefix: `[pod/${log.pod}/${log.container}]`, text, time, pod, index });
    });
  });
  lines.sort((a, b) => a.time - b.time || a.pod - b.pod || a.index - b.index);
  return lines.map((l) => `${l.prefix} ${l.text}`);
}
