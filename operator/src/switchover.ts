/**
 * A planned switchover asked for on the SipHaPair (SWITCHOVER_ANNOTATION:
 * the ordinal of the pod to make master), as one pure decision per
 * reconcile: pass the request on to the master pod (HANDOVER_ANNOTATION at
 * its term), or finish it (the target is master), or refuse it (with the
 * reason, for the Event). The sidecar does the handover itself (decision
 * 0006): the operator never moves a role, it only asks.
 */
import type { PodView, Transition } from './status.ts';

export type SwitchoverPlan =
  /** Nothing asked, nothing left over; or a handover in flight (for a moment no pod is master): wait. */
  | { kind: 'idle' }
  /** Ask `pod` (the master, at `term`) to hand over; `event` only the first time. */
  | { kind: 'ask'; pod: string; term: number; event: Transition | null }
  /** The request is over (done or refused): remove it, and any handover asked of the pods. */
  | { kind: 'end'; event: Transition | null; clearPods: string[] };

export function switchoverPlan(pair: string, requested: string | undefined, pods: PodView[]): SwitchoverPlan {
  const asked = pods.filter((p) => p.handoverTerm !== undefined).map((p) => p.name);
  const end = (event: Transition | null): SwitchoverPlan => ({ kind: 'end', event, clearPods: asked });
  if (requested === undefined) return asked.length > 0 ? end(null) : { kind: 'idle' };
  if (requested !== '0' && requested !== '1') {
    return end(refused(`sipha.io/switchover=${requested}: expected the ordinal of a pod, 0 or 1`));
  }
  const target = `${pair}-${requested}`;
  const masters = pods.filter((p) => p.role === 'master');
  const master = masters.length === 1 ? masters[0] : undefined;
  if (master?.name === target) {
    const moved = asked.length > 0;
    return end({
      reason: moved ? 'SwitchoverDone' : 'SwitchoverNotNeeded',
      type: 'Normal',
      message: moved ? `${target} is master now (term ${master.term})` : `${target} is master already`,
    });
  }
  if (!master) {
    // Asked already: the old master resigned and the target is about to take over.
    if (asked.length > 0 && masters.length === 0) return { kind: 'idle' };
    return end(refused(`no single master to hand over from (${masters.length} claim master)`));
  }
  const refusal = master.handoverRefused?.split(' ');
  if (refusal && Number(refusal[0]) === master.term && master.handoverTerm === master.term) {
    return end(refused(`${master.name} refused: ${refusal.slice(1).join(' ')}`));
  }
  const backup = pods.find((p) => p.name === target);
  if (backup?.role !== 'backup' || backup.inSync === false || master.inSync === false) {
    return end(refused(`${target} is not an in-sync backup (it reports ${backup?.role ?? 'nothing'})`));
  }
  return {
    kind: 'ask',
    pod: master.name,
    term: master.term,
    event:
      master.handoverTerm === master.term
        ? null
        : {
            reason: 'SwitchoverRequested',
            type: 'Normal',
            message: `asked ${master.name} (term ${master.term}) to hand over to ${target}`,
          },
  };
}

function refused(message: string): Transition {
  return { reason: 'SwitchoverRefused', type: 'Warning', message };
}
