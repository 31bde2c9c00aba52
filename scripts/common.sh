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

# The folder cargo builds release binaries into, wherever CARGO_TARGET_DIR (or a cargo config)
# puts it: asked of cargo, never assumed to be target/ under the repository.
release_dir() {
  local dir
  dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  [[ -n $dir ]] || { echo "cannot tell cargo's target directory" >&2; return 1; }
  echo "$dir/release"
}
