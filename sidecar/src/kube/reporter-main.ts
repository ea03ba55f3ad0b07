/**
 * Runs the role reporter as its own process, driven by lines on stdin:
 *   master <term> <reason> [gapMs]  |  backup <term> <reason>  |  ...
 * Prints "reported <role> <term>" after each patch and "fenced <term>" when
 * the operator fences this pod. The sidecar's role machine drives the same
 * class in-process; this entry lets tests and operators exercise it alone.
 *
 *   SIPHA_POD_NAME=... SIPHA_POD_NAMESPACE=... [KUBECONFIG=...] node reporter-main.ts
 */
import { createInterface } from 'node:readline';
import * as k8s from '@kubernetes/client-node';
import { ROLES, type Role } from '../../../contract/names.ts';
import { RoleReporter } from './role-reporter.ts';

const pod = process.env.SIPHA_POD_NAME;
const namespace = process.env.SIPHA_POD_NAMESPACE;
if (!pod || !namespace) {
  console.error('reporter: SIPHA_POD_NAME and SIPHA_POD_NAMESPACE are required');
  process.exit(2);
}
const kc = new k8s.KubeConfig();
kc.loadFromDefault();
const reporter = new RoleReporter(kc, namespace, pod);
await reporter.watchFencing((term) => console.log(`fenced ${term}`));

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const [role, termText, reason, gap] = line.trim().split(/\s+/);
  if (!role) continue;
  if (!(ROLES as readonly string[]).includes(role) || !Number.isInteger(Number(termText))) {
    console.log(`error: bad line: ${line}`);
    continue;
  }
  try {
    await reporter.report({
      role: role as Role,
      term: Number(termText),
      reason: reason ?? 'unspecified',
      ...(gap ? { gapMs: Number(gap) } : {}),
    });
    console.log(`reported ${role} ${termText}`);
  } catch (err) {
    console.log(`error: ${(err as Error).message}`);
  }
}
reporter.stop();
