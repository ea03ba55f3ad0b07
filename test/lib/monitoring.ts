/**
 * The monitoring artefacts users install (the chart's alert rules, the Grafana
 * dashboard) as the tests see them: rendered by the real helm, checked by the
 * real promtool (hack/build-promtool.sh), their PromQL's metric names listed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helmBinary } from './control-plane.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CHART = join(ROOT, 'charts/sipha');
export const DASHBOARD = join(CHART, 'dashboards/sipha.json');
export const ALERT_TESTS = join(ROOT, 'test/alerts/sipha-alerts.test.yaml');

/** promtool's path; the first call on a machine unpacks it from Debian's package (cached). */
export function promtoolPath(): string {
  const out = execFileSync('bash', [join(ROOT, 'hack/build-promtool.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return out.trim().split('\n').pop() as string;
}

/** Runs promtool; exit code and both outputs (promtool says what failed on stdout). */
export function promtool(bin: string, args: string[]): { code: number; out: string } {
  try {
    return { code: 0, out: execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (err) {
    const e = err as { status: number; stdout: string; stderr: string };
    return { code: e.status, out: `${e.stdout}\n${e.stderr}` };
  }
}

/**
 * The chart's PrometheusRule rendered by helm (with `--set-json` overrides, so
 * numbers stay numbers), its `spec` turned into a plain Prometheus rules file
 * (`groups:` at the top). Throws with helm's message when helm refuses.
 */
export function renderAlertRules(sets: string[] = []): string {
  const helm = helmBinary();
  const args = ['template', 'sipha', CHART, '--show-only', 'templates/prometheusrule.yaml'];
  for (const s of ['monitoring.prometheusRule.enabled=true', ...sets]) args.push('--set-json', s);
  let doc: string;
  try {
    doc = execFileSync(helm, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`helm template: ${(err as { stderr: string }).stderr}`);
  }
  // The template writes `spec:` then the rules file indented by two (templates/prometheusrule.yaml).
  const lines = doc.split('\n');
  const at = lines.indexOf('spec:');
  if (at < 0) throw new Error(`no spec in the rendered PrometheusRule:\n${doc}`);
  return `${lines
    .slice(at + 1)
    .map((l) => {
      if (l !== '' && !l.startsWith('  ')) throw new Error(`line outside spec: ${l}`);
      return l.slice(2);
    })
    .join('\n')}\n`;
}

/** Every `expr:` of a rules file (the template writes each on one line). */
export function ruleExprs(rules: string): Array<{ alert: string; expr: string }> {
  const out: Array<{ alert: string; expr: string }> = [];
  let alert = '';
  for (const line of rules.split('\n')) {
    const a = /^\s*- alert: (\S+)$/.exec(line);
    if (a) alert = a[1] as string;
    const e = /^\s*expr: (.+)$/.exec(line);
    if (e) out.push({ alert, expr: e[1] as string });
  }
  return out;
}

interface Target {
  expr?: string;
}
interface Panel {
  title: string;
  targets?: Target[];
  panels?: Panel[];
}

/** Every PromQL the dashboard runs: panel targets, template variable queries, annotations. */
export function dashboardExprs(): Array<{ where: string; expr: string }> {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[];
    templating: { list: Array<{ name: string; type: string; query: unknown }> };
    annotations: { list: Array<{ name: string; expr?: string }> };
  };
  const out: Array<{ where: string; expr: string }> = [];
  const walk = (ps: Panel[]) => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    // label_values(<selector>, label): the selector is the PromQL part.
    const m = /^label_values\((.*),\s*[a-zA-Z_]+\)$/.exec(q);
    out.push({ where: `variable $${v.name}`, expr: m ? (m[1] as string) : q });
  }
  for (const a of d.annotations.list) if (a.expr) out.push({ where: `annotation "${a.name}"`, expr: a.expr });
  return out;
}

/** A dashboard query with Grafana's variables replaced, so PromQL tools can parse it. */
export function withoutGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__range', '1h')
    .replace(/\$\{?[a-zA-Z_]+\}?/g, '.*');
}

/**
 * The sipha metric families a PromQL expression reads (`x_bucket`, `x_sum`,
 * `x_count` of a histogram count as `x`, given the exported families' types).
 */
export function metricFamiliesIn(expr: string, types: Map<string, string>): string[] {
  const names = new Set<string>();
  for (const m of expr.matchAll(/\bsipha_[a-zA-Z0-9_]+/g)) {
    const name = m[0];
    const base = /^(.*)_(bucket|sum|count)$/.exec(name)?.[1];
    names.add(base !== undefined && types.get(base) === 'histogram' ? base : name);
  }
  return [...names];
}

/** The Prometheus Operator release whose CRDs the chart's PodMonitor and PrometheusRule are checked against. */
export const PROMETHEUS_OPERATOR_VERSION = 'v0.85.0';

/**
 * The PodMonitor and PrometheusRule CRDs as the Prometheus Operator publishes
 * them (example/prometheus-operator-crd/ in its Go module, fetched once into
 * Go's module cache).
 */
export function monitoringCrds(): string[] {
  const out = execFileSync(
    'go',
    ['mod', 'download', '-json', `github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}`],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const dir = (JSON.parse(out) as { Dir: string }).Dir;
  return ['podmonitors', 'prometheusrules'].map((k) =>
    join(dir, 'example/prometheus-operator-crd', `monitoring.coreos.com_${k}.yaml`),
  );
}
