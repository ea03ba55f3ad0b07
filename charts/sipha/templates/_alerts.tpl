{{- /*
The alert rules as a Prometheus rules file body (`groups:`). The PrometheusRule
in prometheusrule.yaml wraps it; test/integration/alerts.test.ts renders it with
helm and runs `promtool check rules` and `promtool test rules` on it.
They expect the labels the chart's PodMonitor adds: namespace, pod, pair.
*/ -}}
{{- define "sipha.alertGroups" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
groups:
  - name: sipha.pairs
    rules:
      - alert: SiphaNoBackupInSync
        # The master's view: its backup has not acknowledged the full state (backup
        # down, resyncing, or its server not holding the master's state).
        expr: (sipha_in_sync == 0) and ignoring (role) (sipha_role{role="master"} == 1)
        for: {{ $r.noBackupInSyncFor }}
        labels:
          severity: warning
        annotations:
          summary: "sipha pair {{`{{ $labels.namespace }}/{{ $labels.pair }}`}} has no backup in sync"
          description: "Master {{`{{ $labels.pod }}`}} has had no in-sync backup for {{ $r.noBackupInSyncFor }}: a failure of the master now loses registrations and calls."
      - alert: SiphaRoleFlapping
        # Takeovers summed over both pods of a pair: a failover and a failback are 2.
        expr: sum by (namespace, pair) (increase(sipha_takeovers_total[{{ $r.flapping.window }}])) >= {{ $r.flapping.takeovers }}
        labels:
          severity: warning
        annotations:
          summary: "sipha pair {{`{{ $labels.namespace }}/{{ $labels.pair }}`}} changes roles repeatedly"
          description: "{{`{{ $value | humanize }}`}} takeovers in {{ $r.flapping.window }}: look for a server crashing in a loop, a flaky node network or a heartbeat interval too tight."
      - alert: SiphaReplicationLagHigh
        expr: histogram_quantile(0.99, rate(sipha_replication_lag_seconds_bucket[5m])) > {{ $r.lagP99Seconds }}
        for: {{ $r.lagFor }}
        labels:
          severity: warning
        annotations:
          summary: "sipha replication lag p99 above {{ $r.lagP99Seconds }} s on {{`{{ $labels.namespace }}/{{ $labels.pod }}`}}"
          description: "p99 of send-to-ack over 5m is {{`{{ $value | humanizeDuration }}`}} (a bucket bound, interpolated). In sync mode egress waits for the ack, so callers wait too."
      - alert: SiphaTwoMasters
        # Both pods scraped as master. One scrape interval of overlap is normal during a
        # takeover (the old master is scraped before it resigned): "for" outlasts it.
        expr: count by (namespace, pair) (sipha_role{role="master"} == 1) > 1
        for: {{ $r.twoMastersFor }}
        labels:
          severity: critical
        annotations:
          summary: "sipha pair {{`{{ $labels.namespace }}/{{ $labels.pair }}`}} has two masters"
          description: "Both sidecars of the pair say master: a split brain. Both announce the VIP; check the node network between them and the witness."
{{- end -}}
