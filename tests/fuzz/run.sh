#!/usr/bin/env bash
# Runs one libFuzzer target for a while on a copy of its seed corpus (the repository's corpus
# is never written). A crash, leak, timeout or sanitizer report fails the run and leaves the
# input in the current directory (crash-*, leak-*, timeout-*), printed at the end.
#   run.sh FUZZER CORPUS_DIR SECONDS [libFuzzer flags...]
set -uo pipefail
fuzzer=$1 corpus=$2 seconds=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/ 2>/dev/null || true
# -rss_limit_mb: an input that makes the target allocate gigabytes is a finding, not a pass.
"$fuzzer" "$work" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "$@" 2>&1 | tail -40
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] || { echo "finding: rc=$rc; reproduce with: $fuzzer <the crash-* file above>"; ls crash-* leak-* timeout-* oom-* 2>/dev/null; }
exit $rc
