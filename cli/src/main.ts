/**
 * kubectl sipha: see and operate sipha pairs (SipHaPair) the way kubectl
 * plugins do. Subcommands: status [NAME], history NAME, switchover NAME
 * --to <ordinal|pod>, rotate-key NAME, logs NAME. Errors go to stderr as "error: ...", exit 1.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { GROUP, PAIR_LABEL, PLURAL, VERSION } from '../../contract/names.ts';
import type { SipHaPair } from '../../contract/siphapair.ts';
import { type Args, parseArgs, parseDuration, UsageError } from './args.ts';
import { apiMessage, type Client, connect, isNotFound } from './client.ts';
import { readLag } from './lag.ts';
import { pairLogs } from './logs.ts';
import { historyTable, pairStatus, pairsTable } from './render.ts';
import { rotateKey } from './rotate-key.ts';
import { switchover } from './switchover.ts';

export const USAGE = `kubectl sipha: see and operate sipha pairs (SipHaPair, short name shp)

Usage:
  kubectl sipha status [NAME]                        pairs at a glance; with NAME: pods, roles, terms, sync, lag p99, last role changes
  kubectl sipha history NAME                         the pair's last role changes (status.history)
  kubectl sipha switchover NAME --to <0|1|POD>       planned switchover; waits for the operator's answer (--timeout, default 60s)
  kubectl sipha rotate-key NAME                      a new pair key without a restart, in three steps; shows each (--timeout, default 10m)
  kubectl sipha logs NAME [--tail N] [--since 10m] [-c CONTAINER]
                                                     both pods' sidecar logs merged by time

Flags kubectl users know: --kubeconfig FILE, --context NAME, -n/--namespace NS
`;

async function getPair(client: Client, name: string): Promise<SipHaPair> {
  try {
    return (await client.custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: client.namespace,
      plural: PLURAL,
      name,
    })) as SipHaPair;
  } catch (err) {
    if (isNotFound(err)) throw new UsageError(`siphapair "${name}" not found in namespace ${client.namespace}`);
    throw err;
  }
}

function needName(args: Args): string {
  const name = args.positional[0];
  if (!name) throw new UsageError(`${args.command} needs the pair's NAME`);
  return name;
}

async function run(args: Args): Promise<number> {
  if (args.help || args.command === undefined || args.command === 'help') {
    process.stdout.write(USAGE);
    return args.command === undefined && !args.help ? 1 : 0;
  }
  const client = connect(args);
  const now = new Date();
  switch (args.command) {
    case 'status': {
      if (args.positional.length === 0) {
        const list = (await client.custom.listNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace: client.namespace,
          plural: PLURAL,
        })) as { items: SipHaPair[] };
        console.log(pairsTable(list.items, now));
        return 0;
      }
      const pair = await getPair(client, needName(args));
      const pods: V1Pod[] = (
        await client.core.listNamespacedPod({ namespace: client.namespace, labelSelector: `${PAIR_LABEL}=${pair.metadata.name}` })
      ).items;
      const lag = await readLag(client, pods, pair.spec.ports?.metrics ?? 9090, 2000);
      console.log(pairStatus(pair, pods, lag, now));
      return 0;
    }
    case 'history': {
      const pair = await getPair(client, needName(args));
      const h = pair.status?.history ?? [];
      console.log(h.length ? historyTable(h) : `No role changes recorded for ${pair.metadata.name} yet.`);
      return 0;
    }
    case 'switchover': {
      const name = needName(args);
      const to = args.flags.get('to');
      if (to === undefined) throw new UsageError('switchover needs --to <0|1|POD>');
      await getPair(client, name);
      const timeout = parseDuration(args.flags.get('timeout') ?? '60s');
      console.log(`asked for a switchover of ${name} to ${to}; waiting up to ${timeout / 1000} s for the operator`);
      const r = await switchover(client, name, to, timeout);
      (r.ok ? console.log : console.error)(r.ok ? r.message : `error: ${r.message}`);
      return r.ok ? 0 : 1;
    }
    case 'rotate-key': {
      const name = needName(args);
      await getPair(client, name);
      const timeout = parseDuration(args.flags.get('timeout') ?? '10m');
      const r = await rotateKey(client, name, timeout, (line) => console.log(line));
      (r.ok ? console.log : console.error)(r.ok ? r.message : `error: ${r.message}`);
      return r.ok ? 0 : 1;
    }
    case 'logs': {
      const name = needName(args);
      await getPair(client, name);
      const tail = args.flags.get('tail');
      const since = args.flags.get('since');
      if (tail !== undefined && !/^\d+$/.test(tail)) throw new UsageError(`--tail needs a count (got ${tail})`);
      const r = await pairLogs(client, name, {
        container: args.flags.get('container'),
        tailLines: tail !== undefined ? Number(tail) : undefined,
        sinceSeconds: since !== undefined ? Math.ceil(parseDuration(since) / 1000) : undefined,
      });
      for (const n of r.notes) console.error(n);
      for (const e of r.errors) console.error(`error: ${e}`);
      if (r.lines.length) console.log(r.lines.join('\n'));
      return r.errors.length > 0 && r.lines.length === 0 ? 1 : 0;
    }
    default:
      throw new UsageError(`unknown command "${args.command}"\n\n${USAGE}`);
  }
}

export async function main(argv: string[]): Promise<void> {
  let code: number;
  try {
    code = await run(parseArgs(argv));
  } catch (err) {
    console.error(`error: ${err instanceof UsageError ? err.message : apiMessage(err)}`);
    code = 1;
  }
  // Pending keep-alive sockets or a lag read cut off by its timeout must not hold the shell.
  process.exitCode = code;
  setImmediate(() => process.exit(code));
}
