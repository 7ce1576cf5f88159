#!/usr/bin/env bash
# Build (once) and print the path of a virtual environment keyed by its lock file.
#
#   scripts/venv.sh NAME LOCKFILE [FIRST_REQUIREMENT ...]
#
# The environment lives in $LABELLOOP_CACHE/venvs/NAME-<sha of lock + this script>, so a warm run reuses it
# and a changed lock builds a new one. FIRST_REQUIREMENTs are installed before the lock (torch and torchvision
# must come first so pip takes the local CUDA-build wheels that run on the CPU here). A half-built environment
# (interrupted install) has no .complete marker and is rebuilt. Concurrent callers wait on a lock file.
# Progress goes to stderr; only the path goes to stdout.
set -euo pipefail
name=$1
lock=$2
shift 2
cache=${LABELLOOP_CACHE:-$HOME/.cache/labelloop}
python=${LABELLOOP_PYTHON:-python3.11}
key=$(cat "$lock" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
venv=$cache/venvs/$name-$key
mkdir -p "$cache/venvs"
exec 9>"$cache/venvs/$name.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  start=$(date +%s)
  echo "venv: building $venv from $lock (one-off; later runs reuse it)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  quiet_pip() {  # pip, minus this machine's notes about absent local index folders
    "$venv/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "neither a file nor a directory" || true; } >&2
  }
  quiet_pip --upgrade "pip>=24"
  if [ $# -gt 0 ]; then
    quiet_pip "$@"
  fi
  quiet_pip -r "$lock"
  touch "$venv/.complete"
  echo "venv: $name ready in $(( $(date +%s) - start )) s" >&2
fi
echo "$venv"
