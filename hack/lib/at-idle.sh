# Sourced by hack/test.sh.
#
# at_idle CMD...: runs CMD on the CPU time nobody else wants. SCHED_IDLE alone is
# not that here: with autogroups on (kernel.sched_autogroup_enabled, Debian's
# default) each session is one scheduling entity of nice-0 weight, and a thread's
# policy ranks it only within its session. The beds' Kamailios, sidecars and sipps
# run in sessions of their own (spawned detached), so compilers at SCHED_IDLE in
# the runner's session still took a full share beside each of them (seen: the
# runner's session, the builds in it, and each sidecar in its own autogroup).
# CMD gets a session of its own, its autogroup at nice 19, its threads SCHED_IDLE.
at_idle() {
  setsid --wait chrt --idle 0 bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null || true; exec "$@"' at_idle "$@"
}
