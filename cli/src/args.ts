/**
 * The plugin's command line, parsed once at the edge: kubectl's own global
 * flags (a plugin gets them as plain arguments: --kubeconfig, --context,
 * -n/--namespace) plus the subcommand's. Unknown flags are an error, as in kubectl.
 */
export interface Args {
  command: string | undefined;
  positional: string[];
  kubeconfig: string | undefined;
  context: string | undefined;
  namespace: string | undefined;
  /** Subcommand flags by long name (--to, --timeout, --tail, --since, -c). */
  flags: Map<string, string>;
  help: boolean;
}

/** Flags that take a value; the short forms kubectl users type map to their long names. */
const VALUED: Record<string, string> = {
  kubeconfig: 'kubeconfig',
  context: 'context',
  namespace: 'namespace',
  n: 'namespace',
  to: 'to',
  timeout: 'timeout',
  tail: 'tail',
  since: 'since',
  container: 'container',
  c: 'container',
};

export class UsageError extends Error {}

export function parseArgs(argv: string[]): Args {
  const out: Args = {
    command: undefined,
    positional: [],
    kubeconfig: undefined,
    context: undefined,
    namespace: undefined,
    flags: new Map(),
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '-h' || a === '--help') {
      out.help = true;
      continue;
    }
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) {
      if (out.command === undefined) out.command = a;
      else out.positional.push(a);
      continue;
    }
    const name = VALUED[m[1] as string];
    if (name === undefined) throw new UsageError(`unknown flag: ${a}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new UsageError(`flag needs a value: ${a}`);
    if (name === 'kubeconfig') out.kubeconfig = value;
    else if (name === 'context') out.context = value;
    else if (name === 'namespace') out.namespace = value;
    else out.flags.set(name, value);
  }
  return out;
}

/** "90s", "2m", "1h" or plain seconds, as kubectl's durations are written. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) throw new UsageError(`not a duration: ${text} (e.g. 30s, 5m, 1h)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Number(m[1]) * unit;
}
