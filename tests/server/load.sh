#!/usr/bin/env bash
# The server under load and under hostile clients (tests/server/js/stress.mjs), on the CPU
# with a fixture model, then: every gauge of /metrics back to 0 (running, queued, KV blocks,
# in flight), and the server's resident memory grown by less than RSS_BOUND_MIB over the run.
#   Usage: load.sh path/to/fp6serve path/to/model_dir
set -uo pipefail
bin=$1
model_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/js/node_modules/openai" ] || { echo "node modules missing: run tools/setup.sh"; exit 1; }
key=load-key
max_connections=400
request_timeout=3
rss_bound_mib=${RSS_BOUND_MIB:-64}
log=$(mktemp)
trap '[ -n "${pid:-}" ] && kill -9 $pid 2>/dev/null; rm -f "$log"' EXIT
. "$(dirname "$0")/start_server.sh"
start_server "$log" --model "$model_dir" --api-key "$key" --served-model-name tiny --max-connections $max_connections \
  --request-timeout $request_timeout
rss() { awk '/^VmRSS/ {print int($2 / 1024)}' /proc/$pid/status; }
# Warm up (first allocations of the engine, the thread pools, the sockets), then measure.
curl -s -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"model": "tiny", "prompt": "warm up", "max_tokens": 8}' "$base/v1/completions"
rss_before=$(rss)
fail=0
start=$SECONDS
(cd "$here/js" && node stress.mjs "$base/v1" "$key" tiny $max_connections $request_timeout) || fail=1
for _ in $(seq 50); do
  metrics=$(curl -s "$base/metrics")
  if grep -q '^fp6serve_kv_blocks_in_use 0$' <<<"$metrics" && grep -q '^fp6serve_running_requests 0$' <<<"$metrics" &&
     grep -q '^fp6serve_queue_length 0$' <<<"$metrics" && grep -q '^fp6serve_requests_in_flight 0$' <<<"$metrics"; then
    break
  fi
  sleep 0.1
done
for gauge in fp6serve_kv_blocks_in_use fp6serve_running_requests fp6serve_queue_length fp6serve_requests_in_flight; do
  grep -q "^$gauge 0$" <<<"$metrics" || { echo "FAIL $(grep "^$gauge " <<<"$metrics") after the load"; fail=1; }
done
rss_after=$(rss)
echo "load: $((SECONDS - start)) s; RSS ${rss_before} MiB -> ${rss_after} MiB (bound +${rss_bound_mib} MiB); " \
  "$(grep '^fp6serve_requests_total' <<<"$metrics" | awk '{s += $2} END {print s}') requests counted"
[ $((rss_after - rss_before)) -lt "$rss_bound_mib" ] || { echo "FAIL RSS grew by $((rss_after - rss_before)) MiB"; fail=1; }
kill -TERM $pid
for _ in $(seq 150); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && { echo "FAIL server still running after SIGTERM"; fail=1; }
[ $fail = 0 ] || { echo "--- server log"; tail -20 "$log"; }
exit $fail
