/**
 * Runs the sidecar's Kubernetes side as its own process, driven by lines on
 * stdin:  master <term> <reason> [gapMs] [in-sync|out-of-sync] [registrations=<n>] [keys=<ids>] [key-mismatch]
 *         |  backup <term> <reason>  |  ...
 * The sidecar's role machine drives the same classes in-process; this entry
 * lets tests and operators exercise them alone. It prints:
 *   seeded term <n> [missing <sources>]  once at start (the terms read back)
 *   reported <role> <term>                when a report landed on the pod
 *   error: <role> <term> <message>        after each failed attempt (retried)
 *   fenced <term>                         when the operator fences this pod
 *   handover <term>                       when the operator asks this pod to hand over (a switchover)
 *   label <l> overwritten; reporting <role> <term> again   another writer changed the role label
 * Structured logs (the watch's) go to stderr.
 *
 *   SIPHA_POD_NAME=... SIPHA_POD_NAMESPACE=... [KUBECONFIG=...] node reporter-main.ts
 * Test knobs: SIPHA_REPORT_TIMEOUT_MS, SIPHA_REPORT_MAX_BACKOFF_MS, SIPHA_SEED_DEADLINE_MS,
 * SIPHA_ROLE_LABEL_RECHECK_MS.
 */
import { createInterface } from 'node:readline';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { ROLES, type Role } from '../../../contract/names.ts';
import { FencingWatch } from './fencing-watch.ts';
import { RoleReporter } from './role-reporter.ts';
import { readPairTerm } from './term-seed.ts';

const pod = process.env.SIPHA_POD_NAME;
const namespace = process.env.SIPHA_POD_NAMESPACE;
if (!pod || !namespace) {
  console.error('reporter: SIPHA_POD_NAME and SIPHA_POD_NAMESPACE are required');
  process.exit(2);
}
const num = (name: string) => (process.env[name] ? Number(process.env[name]) : undefined);
const message = (err: unknown) => {
  const e = err as { body?: unknown; message?: string };
  return `${e.message ?? String(err)} ${typeof e.body === 'string' ? e.body : ''}`.replace(/\s+/g, ' ').trim();
};

const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const log = pino({ name: 'sipha-reporter' }, pino.destination(2));

const reporter = new RoleReporter(kc, namespace, pod, {
  ...(num('SIPHA_REPORT_TIMEOUT_MS') !== undefined ? { attemptTimeoutMs: num('SIPHA_REPORT_TIMEOUT_MS') } : {}),
  ...(num('SIPHA_REPORT_MAX_BACKOFF_MS') !== undefined ? { maxBackoffMs: num('SIPHA_REPORT_MAX_BACKOFF_MS') } : {}),
  ...(num('SIPHA_ROLE_LABEL_RECHECK_MS') !== undefined ? { labelRecheckMs: num('SIPHA_ROLE_LABEL_RECHECK_MS') } : {}),
  reported: (r) => console.log(`reported ${r.role} ${r.term}`),
  overwritten: (label, r) => console.log(`label ${label ?? 'none'} overwritten; reporting ${r.role} ${r.term} again`),
  failed: (r, err) => console.log(`error: ${r.role} ${r.term} ${message(err)}`),
});
const fencing = new FencingWatch(
  kc,
  namespace,
  pod,
  {
    fenced: (term) => console.log(`fenced ${term}`),
    handover: (term) => console.log(`handover ${term}`),
    roleLabel: (role) => reporter.observedLabel(role),
  },
  log,
);
fencing.start();

// Only a pod of a pair (<pair>-0 / <pair>-1) has terms to read back.
if (/-[01]$/.test(pod)) {
  const seed = await readPairTerm(kc, namespace, pod, {
    ...(num('SIPHA_SEED_DEADLINE_MS') !== undefined ? { deadlineMs: num('SIPHA_SEED_DEADLINE_MS') } : {}),
    failed: (source, err) => log.info({ err, source }, 'term not read yet'),
  });
  console.log(`seeded term ${seed.term}${seed.missing.length ? ` missing ${seed.missing.join(',')}` : ''}`);
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const words = line.trim().split(/\s+/);
  const sync = words.find((w) => w === 'in-sync' || w === 'out-of-sync');
  const regs = words.find((w) => /^registrations=\d+$/.test(w));
  const keys = words.find((w) => /^keys=[\d,]+$/.test(w));
  const mismatch = words.find((w) => w === 'key-mismatch');
  const [role, termText, reason, gap] = words.filter((w) => w !== sync && w !== regs && w !== keys && w !== mismatch);
  if (!role) continue;
  if (!(ROLES as readonly string[]).includes(role) || !Number.isInteger(Number(termText))) {
    console.log(`error: bad line: ${line}`);
    continue;
  }
  reporter.report({
    role: role as Role,
    term: Number(termText),
    reason: reason ?? 'unspecified',
    ...(gap ? { gapMs: Number(gap) } : {}),
    ...(sync ? { inSync: sync === 'in-sync' } : {}),
    ...(regs ? { registrations: Number(regs.slice('registrations='.length)) } : {}),
    ...(keys ? { keys: keys.slice('keys='.length), keyMismatch: mismatch !== undefined } : {}),
  });
}
reporter.stop();
fencing.stop();
