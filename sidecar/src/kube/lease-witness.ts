/**
 * The in-cluster witness: a coordination.k8s.io/v1 Lease named
 * `<pair>-witness` in the pair's namespace. holderIdentity is the pod name,
 * the holder's term is the `sipha.io/term` annotation, and the grant rule is
 * the same pure `decideClaim` the UDP arbiter uses.
 *
 * Acquire and renew are one `replace` carrying the resourceVersion just read
 * (optimistic lock): a 409 means someone wrote in between, so read again and
 * decide again. Every claim has a deadline; past it the verdict is
 * `unreachable`.
 *
 * Expiry is judged as client-go's leader election does, without trusting
 * another pod's clock: a holder's lease runs `leaseDurationSeconds` from the
 * moment THIS process first saw its current resourceVersion. A side that
 * only looked at the Lease when it claimed would therefore wait a full
 * duration at every takeover from a silent holder (1.1-1.5 s measured on the
 * two-node cluster, issue 10): `follow()` watches the one Lease, so the
 * moment each write was seen is known before the claim, and a holder silent
 * for a duration is taken over at once.
 *
 * Imports client-node at the top: load this module only inside a pod, by a
 * dynamic import (as main.ts does for the role reporter).
 */
import * as k8s from '@kubernetes/client-node';
import { ResilientWatch } from '../../../contract/kube-watch.ts';
import { TERM_ANNOTATION, witnessLeaseName } from '../../../contract/names.ts';
import { decideClaim, type Witness, type WitnessRecord, type WitnessVerdict } from '../ha/witness.ts';
import { createLogger, type Logger } from '../log.ts';

const quietLog = createLogger('silent', 'lease-witness');

export interface LeaseWitnessOptions {
  readonly kc: k8s.KubeConfig;
  readonly namespace: string;
  /** The SipHaPair's name: the Lease is `<pair>-witness`. */
  readonly pair: string;
  /** This pod's name: the holderIdentity. */
  readonly pod: string;
  readonly ordinal: 0 | 1;
  /** Lease asked for; rounded up to whole seconds (leaseDurationSeconds). */
  readonly ttlMs: number;
  /** Deadline per claim, waiting in line included; default 500 ms. */
  readonly timeoutMs?: number;
}

/** Reads and writes per claim: a claim that keeps losing the race answers `unreachable` ('conflict'). */
const MAX_ROUNDS = 3;
/** Claims waiting behind the one in flight; more answer `unreachable` ('busy') at once. */
const MAX_QUEUED = 2;

export { witnessLeaseName };

class Timeout extends Error {}

export class LeaseWitness implements Witness {
  private readonly api: k8s.CoordinationV1Api;
  private readonly opts: LeaseWitnessOptions;
  private readonly name: string;
  private readonly durationS: number;
  private readonly timeoutMs: number;
  /** The holder's resourceVersion as first seen, and when (local monotonic ms). */
  private observed: { rv: string; at: number } | null = null;
  private tail: Promise<unknown> = Promise.resolve();
  private queued = 0;
  private closed = false;
  private readonly aborts = new Set<AbortController>();
  private watch: ResilientWatch | null = null;
  /** Writes refused with 409 (someone wrote between our read and our write); a counter for metrics. */
  conflicts = 0;

  constructor(opts: LeaseWitnessOptions) {
    this.opts = opts;
    this.api = opts.kc.makeApiClient(k8s.CoordinationV1Api);
    this.name = witnessLeaseName(opts.pair);
    this.durationS = Math.max(1, Math.ceil(opts.ttlMs / 1000));
    this.timeoutMs = opts.timeoutMs ?? 500;
  }

  /** Claims run one at a time, in call order (each one reads the result of the last). */
  claim(term: number): Promise<WitnessVerdict> {
    if (this.closed) return Promise.resolve({ verdict: 'unreachable', reason: 'closed' });
    if (!Number.isInteger(term) || term < 0) return Promise.resolve({ verdict: 'unreachable', reason: 'invalid-term' });
    if (this.queued >= MAX_QUEUED + 1) return Promise.resolve({ verdict: 'unreachable', reason: 'busy' });
    this.queued++;
    const ac = new AbortController();
    this.aborts.add(ac);
    const timer = setTimeout(() => ac.abort(new Timeout('timeout')), this.timeoutMs);
    const run = this.tail
      .then(() => this.claimOnce(term, ac.signal))
      .finally(() => {
        clearTimeout(timer);
        this.aborts.delete(ac);
        this.queued--;
      });
    this.tail = run;
    return run;
  }

  close(): void {
    this.closed = true;
    this.watch?.stop();
    for (const ac of this.aborts) ac.abort(new Error('closed'));
  }

  /** Watches the Lease from now on, noting when each of its writes was first seen (needs list and watch on it, by name). */
  follow(log?: Logger): void {
    if (this.watch !== null || this.closed) return;
    this.watch = new ResilientWatch(
      this.opts.kc,
      {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        namespace: this.opts.namespace,
        path: `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases`,
        fieldSelector: `metadata.name=${this.name}`,
        // A healthy watch on a Lease nobody writes is silent: restart it now and then, not often.
        silenceMs: 60_000,
      },
      (type, obj) => {
        if (type === 'DELETED') this.observed = null;
        else this.see(obj.metadata?.resourceVersion ?? '', performance.now());
      },
      log ?? quietLog,
    );
    this.watch.start();
  }

  private see(rv: string, now: number): void {
    if (this.observed?.rv !== rv) this.observed = { rv, at: now };
  }

  private async claimOnce(term: number, signal: AbortSignal): Promise<WitnessVerdict> {
    const options = withSignal(signal);
    try {
      for (let round = 0; round < MAX_ROUNDS; round++) {
        signal.throwIfAborted();
        const lease = await this.read(options);
        const now = performance.now();
        const record = this.recordOf(lease, now);
        const d = decideClaim(record, { ordinal: this.opts.ordinal, term, ttlMs: this.durationS * 1000 }, now);
        if (d.outcome === 'refused') {
          return {
            verdict: 'refused',
            reason: d.reason,
            holder: d.record.holder,
            holderTerm: d.record.term,
            // Whole ms: (seen + duration) - now in floating point came out a hair above the
            // duration on a first sight (1000.0000000000009: the lease-witness e2e's flake).
            remainingMs: Math.max(0, Math.round(d.record.expiresAt - now)),
          };
        }
        const writeStart = performance.now();
        try {
          const written = await this.write(lease, term, options);
          this.observed = { rv: written.metadata?.resourceVersion ?? '', at: performance.now() };
          // Others count our lease from when they see this write, which is after it started.
          return { verdict: 'granted', reason: d.reason, term, validUntil: writeStart + this.durationS * 1000 };
        } catch (err) {
          if (!(err instanceof k8s.ApiException) || err.code !== 409) throw err;
          this.conflicts++;
          // Someone wrote in between (or created it first): read again and decide again.
        }
      }
      return { verdict: 'unreachable', reason: 'conflict' };
    } catch (err) {
      if (signal.aborted) return { verdict: 'unreachable', reason: this.closed ? 'closed' : 'timeout' };
      if (err instanceof k8s.ApiException) return { verdict: 'unreachable', reason: `api-${err.code}`, err };
      return { verdict: 'unreachable', reason: 'api-error', err: err as Error };
    }
  }

  /** The Lease, or null when it does not exist yet. */
  private async read(options: k8s.ConfigurationOptions): Promise<k8s.V1Lease | null> {
    try {
      return await this.api.readNamespacedLease({ name: this.name, namespace: this.opts.namespace }, options);
    } catch (err) {
      if (err instanceof k8s.ApiException && err.code === 404) return null;
      throw err;
    }
  }

  private recordOf(lease: k8s.V1Lease | null, now: number): WitnessRecord | null {
    const holder = lease?.spec?.holderIdentity;
    if (!lease || !holder) return null;
    this.see(lease.metadata?.resourceVersion ?? '', now);
    if (this.observed === null) return null;
    // A holder that wrote no term (not one of ours) is outranked by any term.
    const term = Number(lease.metadata?.annotations?.[TERM_ANNOTATION]);
    return {
      holder: holder === this.opts.pod ? this.opts.ordinal : this.opts.ordinal === 0 ? 1 : 0,
      term: Number.isInteger(term) && term >= 0 ? term : 0,
      expiresAt: this.observed.at + (lease.spec?.leaseDurationSeconds ?? 0) * 1000,
    };
  }

  /** Create the Lease, or replace it at the resourceVersion read (409 when it moved). */
  private write(lease: k8s.V1Lease | null, term: number, options: k8s.ConfigurationOptions): Promise<k8s.V1Lease> {
    const now = new k8s.V1MicroTime();
    const mine = lease?.spec?.holderIdentity === this.opts.pod;
    const spec: k8s.V1LeaseSpec = {
      holderIdentity: this.opts.pod,
      leaseDurationSeconds: this.durationS,
      acquireTime: mine && lease?.spec?.acquireTime ? lease.spec.acquireTime : now,
      renewTime: now,
      leaseTransitions: (lease?.spec?.leaseTransitions ?? 0) + (lease && !mine ? 1 : 0),
    };
    const metadata: k8s.V1ObjectMeta = {
      ...(lease?.metadata ?? {}),
      name: this.name,
      namespace: this.opts.namespace,
      annotations: { ...(lease?.metadata?.annotations ?? {}), [TERM_ANNOTATION]: String(term) },
    };
    const body: k8s.V1Lease = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata, spec };
    if (!lease) return this.api.createNamespacedLease({ namespace: this.opts.namespace, body }, options);
    return this.api.replaceNamespacedLease({ name: this.name, namespace: this.opts.namespace, body }, options);
  }
}

/** Per-request abort: client-node 2.x takes the signal from a request middleware. */
function withSignal(signal: AbortSignal): k8s.ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(signal);
          return new k8s.Observable(Promise.resolve(ctx));
        },
        post: (res) => new k8s.Observable(Promise.resolve(res)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}
