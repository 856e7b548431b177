#!/usr/bin/env bash
# For the device tool when the working tree holds edits that must not go to the GPU machine
# (another engineer's unfinished work): build and run from a snapshot instead.
#
# Here:   BASE=<rev> bash tools/device-snapshot.sh make [FILES...]
#         writes .device/tree = git archive of BASE (default HEAD) plus the named files as they
#         are in the working tree (tests/data is left out: the run links the carried one), and
#         .device/commit. Then call the device tool with carry [".device"] and the command
#           bash tools/device-snapshot.sh run build test ...   (the steps of device-run.sh)
# There:  `run` links the tree's tests/data, .device/deps and a build directory outside the
#         tree (/tmp/fp6serve-snapshot-build: a warm machine keeps it between calls), then runs
#         tools/device-run.sh from the snapshot with $OUT as the device tool set it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
case "${1:-}" in
  make)
    shift
    rm -rf .device/tree
    mkdir -p .device/tree
    git archive "${BASE:-HEAD}" | tar -x -C .device/tree --exclude='tests/data/*'
    for f in "$@"; do
      mkdir -p ".device/tree/$(dirname "$f")"
      cp "$f" ".device/tree/$f"
    done
    echo "$(git rev-parse --short "${BASE:-HEAD}")${*:+ + $*}" >.device/commit
    echo "snapshot: $(cat .device/commit)"
    ;;
  run)
    shift
    cd .device/tree
    rm -rf tests/data && ln -s "$root/tests/data" tests/data
    mkdir -p .device && ln -sfn "$root/.device/deps" .device/deps && cp "$root/.device/commit" .device/commit
    mkdir -p /tmp/fp6serve-snapshot-build && ln -sfn /tmp/fp6serve-snapshot-build build-device
    bash tools/device-run.sh "$@"
    ;;
  *)
    echo "usage: BASE=<rev> bash tools/device-snapshot.sh make [FILES...]   (here)" >&2
    echo "       bash tools/device-snapshot.sh run STEPS...                 (on the GPU machine)" >&2
    exit 2
    ;;
esac
