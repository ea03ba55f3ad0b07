# Sourced by the hack/build-*.sh scripts.
#
# cached_or_locked NAME CHECK...: true when CHECK (a command that says whether the
# cache already holds the build) passes. Otherwise it takes the build lock for NAME
# and asks CHECK again: hack/test.sh builds in the background while a test may ask
# for the same binaries, so a second caller waits for the build under way and then
# finds it done. False means: build now (the lock is held until the script exits).
cached_or_locked() {
  local name=$1
  shift
  "$@" && return 0
  mkdir -p "$CACHE"
  exec {build_lock_fd}>"$CACHE/.build-$name.lock"
  flock "$build_lock_fd"
  "$@"
}
