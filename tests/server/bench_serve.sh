#!/usr/bin/env bash
# fp6serve bench serve against our server on loopback: a small sweep writes its CSV and its
# PNG, the counts add up (requests = ok + errors), and a server that refuses (a wrong key, a
# wrong model name) shows as errors in the table, not as a crash of the client.
#   Usage: bench_serve.sh path/to/fp6serve path/to/model_dir
set -uo pipefail
bin=$1
model_dir=$2
log=$(mktemp)
work=$(mktemp -d)
trap '[ -n "${pid:-}" ] && kill -9 $pid 2>/dev/null; rm -rf "$log" "$work"' EXIT
. "$(dirname "$0")/start_server.sh"
start_server "$log" --model "$model_dir" --api-key k --served-model-name tiny
url=$base
fail=0
"$bin" bench serve --url "$url" --api-key k --label fp6 --clients 1,4 --gen-len 8,16 --requests 8 --prompt-len 20 \
  --max-token-id 1000 --csv "$work/sweep.csv" --plot "$work/sweep.png" || { echo "FAIL bench serve exited $?"; fail=1; }
# A second label into the same CSV and plot (the FP6 against FP16 comparison's shape).
"$bin" bench serve --url "$url/v1" --api-key k --label other --clients 2 --gen-len 8,16 --requests 0 --random-gen-len \
  --max-token-id 1000 --csv "$work/sweep.csv" --plot "$work/sweep.png" || { echo "FAIL second run exited $?"; fail=1; }
rows=$(tail -n +2 "$work/sweep.csv" | wc -l)
[ "$rows" = 6 ] || { echo "FAIL $rows CSV rows, want 6"; fail=1; }
awk -F, 'NR > 1 && $6 + $7 != $3 {bad = 1} NR > 1 && $7 != 0 {bad = 1} END {exit bad}' "$work/sweep.csv" ||
  { echo "FAIL counts do not add up or requests failed:"; cat "$work/sweep.csv"; fail=1; }
head -c 8 "$work/sweep.png" | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a' || { echo "FAIL no PNG"; fail=1; }
# --plot-only redraws from the CSV without a server.
rm -f "$work/sweep.png"
"$bin" bench serve --url http://127.0.0.1:1 --plot-only --csv "$work/sweep.csv" --plot "$work/sweep.png" >/dev/null &&
  head -c 8 "$work/sweep.png" | od -An -tx1 | grep -q '89 50 4e 47 0d 0a 1a 0a' || { echo "FAIL --plot-only"; fail=1; }
# Refusals are errors of the run, reported; the client neither crashes nor hangs.
out=$("$bin" bench serve --url "$url" --api-key wrong --model tiny --clients 2 --gen-len 4 --requests 4 2>&1)
rc=$?
{ [ $rc = 1 ] && grep -q '| 2 | 4 | 4 | 0 | 4 |' <<<"$out" && grep -q 'HTTP 401' <<<"$out"; } ||
  { echo "FAIL a wrong key: rc $rc"; echo "$out"; fail=1; }
out=$("$bin" bench serve --url "$url" --api-key k --model gpt-9 --clients 2 --gen-len 4 --requests 4 2>&1)
rc=$?
{ [ $rc = 1 ] && grep -q 'HTTP 404' <<<"$out"; } || { echo "FAIL a wrong model: rc $rc"; echo "$out"; fail=1; }
out=$("$bin" bench serve --url "http://127.0.0.1:1" --model tiny --clients 1 --gen-len 4 --requests 2 2>&1)
rc=$?
{ [ $rc = 1 ] && grep -q 'connection' <<<"$out"; } || { echo "FAIL no server: rc $rc"; echo "$out"; fail=1; }
# Timing is per event: against a server that sends one token each 20 ms, the median
# inter-token latency is ~20 ms (a client that timed whole read buffers would report ~0 and a
# late first token).
if command -v node >/dev/null; then
  node "$(dirname "$0")/js/paced_sse.mjs" 20 >"$work/paced.port" &
  paced=$!
  for _ in $(seq 100); do [ -s "$work/paced.port" ] && break; sleep 0.1; done
  "$bin" bench serve --url "http://127.0.0.1:$(cat "$work/paced.port")" --clients 2 --gen-len 60 --requests 2 \
    --csv "$work/paced.csv" >/dev/null 2>&1 || { echo "FAIL bench serve against the paced server"; fail=1; }
  kill $paced 2>/dev/null
  # Columns: ttft_p50 (11) and itl_p50 (14), seconds.
  awk -F, 'NR == 2 && ($14 < 0.015 || $14 > 0.1 || $11 > 0.1) {bad = 1} NR == 2 {seen = 1} END {exit bad || !seen}' \
    "$work/paced.csv" || { echo "FAIL timing against the paced server:"; cat "$work/paced.csv"; fail=1; }
fi
[ $fail = 0 ] && echo "ok   bench serve: $rows runs, CSV and PNG; refusals counted as errors"
exit $fail
