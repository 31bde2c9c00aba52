# Shell helpers sourced by the scripts under scripts/.

# Runs "$@" and prints a line to stderr every 10 seconds while it runs, so that a long step
# (a first build, a download) never looks hung. Returns the command's exit status.
with_heartbeat() {
  local label=$1
  shift
  (
    s=0
    while sleep 10; do
      s=$((s + 10))
      echo "   ... $label (${s}s so far)" >&2
    done
  ) &
  local ticker=$!
  local rc=0
  "$@" || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$rc"
}
