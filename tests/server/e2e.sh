#!/usr/bin/env bash
# End-to-end test of `fp6serve serve` on the CPU with a fixture model: the official openai SDK
# as a client, curl for every error case, 64 concurrent streams with a third disconnecting,
# then /metrics must show no KV blocks and no requests left, and SIGTERM must end the
# server cleanly.   Usage: e2e.sh path/to/fp6serve path/to/model_dir
set -uo pipefail
bin=$1
model_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/js/node_modules/openai" ] || { echo "the openai SDK is missing: run tools/setup.sh (npm ci --prefix tests/server/js)"; exit 1; }
key=test-key-123
name=tiny
log=$(mktemp)
fail=0
check() {  # check NAME EXPECTED_STATUS ACTUAL_STATUS BODY PATTERN
  if [ "$2" = "$3" ] && grep -qE "$5" <<<"$4"; then echo "ok   $1"; else echo "FAIL $1: status $3 (want $2), body: $4"; fail=1; fi
}

trap '[ -n "${pid:-}" ] && kill -9 $pid 2>/dev/null; rm -f "$log"' EXIT
. "$(dirname "$0")/start_server.sh"
start_server "$log" --model "$model_dir" --api-key "$key" --served-model-name "$name" --max-body-mib 1 \
  --quantization-mode wf6af16 --allowed-origins http://app.example,http://other.example --log-requests

req() {  # req METHOD PATH [BODY] [extra curl args...] -> "STATUS BODY"
  local method=$1 path=$2 body=${3:-}
  shift 3 2>/dev/null || shift $#
  curl -s -o /tmp/fp6-e2e-body -w '%{http_code}' -X "$method" "$base$path" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' ${body:+--data-binary "$body"} "$@"
}
status_body() { st=$(req "$@"); body=$(cat /tmp/fp6-e2e-body); }

# A second server on the port in use stops with exit status 1 (cpp-httplib's SO_REUSEPORT once
# let both listen and split the traffic).
port=${base##*:}
out=$("$bin" serve --model "$model_dir" --port "$port" 2>&1); rc=$?
check "second server on a port in use" 1 "$rc" "$out" "cannot listen on 127.0.0.1:$port: Address already in use"

# The official SDK.
(cd "$here/js" && node openai_client.mjs "$base/v1" "$key" "$name") || fail=1

# Errors: OpenAI's JSON error shape with the right status.
status_body GET /health; check "health" 200 "$st" "$body" '"ok"'
st=$(curl -s -o /tmp/fp6-e2e-body -w '%{http_code}' "$base/v1/models"); body=$(cat /tmp/fp6-e2e-body)
check "missing API key" 401 "$st" "$body" '"invalid_api_key"'
st=$(curl -s -o /tmp/fp6-e2e-body -w '%{http_code}' -H 'Authorization: Bearer nope' "$base/v1/models"); body=$(cat /tmp/fp6-e2e-body)
check "wrong API key" 401 "$st" "$body" '"Incorrect API key'
# The small routes: a model by id (openai SDK's models.retrieve), /tokenize and /detokenize.
status_body GET "/v1/models/$name"; check "model by id" 200 "$st" "$body" "\"id\":\"$name\""
status_body GET /v1/models/gpt-9; check "unknown model id" 404 "$st" "$body" '"code":"model_not_found"'
status_body POST /tokenize '{"prompt": "Hello world"}'; check "tokenize" 200 "$st" "$body" '"tokens":\[[0-9,]+\],"count":[0-9]+'
ids=$(sed -n 's/.*"tokens":\(\[[0-9,]*\]\).*/\1/p' <<<"$body")
status_body POST /detokenize "{\"tokens\": $ids}"; check "detokenize" 200 "$st" "$body" 'Hello world'
st=$(curl -s -o /tmp/fp6-e2e-body -w '%{http_code}' -X POST -d '{"prompt": "x"}' "$base/tokenize"); body=$(cat /tmp/fp6-e2e-body)
check "tokenize needs the key" 401 "$st" "$body" '"invalid_api_key"'
status_body POST /detokenize '{"tokens": [1, 99999999]}'; check "detokenize bad id" 400 "$st" "$body" '"param":"tokens"'
# CORS: an allowed origin's preflight is answered without the key, its answers carry the header;
# another origin gets none.
hdr=$(curl -s -D - -o /dev/null -X OPTIONS -H 'Origin: http://app.example' -H 'Access-Control-Request-Method: POST' "$base/v1/completions")
check "CORS preflight" 204 "$(head -1 <<<"$hdr" | cut -d' ' -f2)" "$hdr" 'Access-Control-Allow-Origin: http://app.example'
hdr=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $key" -H 'Origin: http://other.example' "$base/v1/models")
check "CORS answer header" 200 "$(head -1 <<<"$hdr" | cut -d' ' -f2)" "$hdr" 'Access-Control-Allow-Origin: http://other.example'
hdr=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $key" -H 'Origin: http://evil.example' "$base/v1/models")
if grep -qi 'Access-Control-Allow-Origin' <<<"$hdr"; then echo "FAIL CORS: a foreign origin was allowed"; fail=1; else echo "ok   CORS foreign origin"; fi
# Fields we do not implement are refused, naming them.
status_body POST /v1/chat/completions '{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}'
check "response_format refused" 400 "$st" "$body" '"param":"response_format"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "logit_bias": {"5": 3}}'
check "logit_bias refused" 400 "$st" "$body" '"param":"logit_bias"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "max_tokens": 3, "stop_token_ids": [5]}'
check "stop_token_ids accepted" 200 "$st" "$body" '"text_completion"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", max_tokens: 3}'
check "malformed JSON" 400 "$st" "$body" '"type":"invalid_request_error"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "max_tokens": "three"}'
check "wrong type" 400 "$st" "$body" '"param":"max_tokens"'
status_body POST /v1/chat/completions '{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 3, "max_tokens": "three"}'
check "bad max_tokens beside max_completion_tokens" 400 "$st" "$body" '"param":"max_tokens"'
status_body POST /v1/completions '{"model": "gpt-9", "prompt": "hi"}'
check "unknown model" 404 "$st" "$body" '"code":"model_not_found"'
long=$(python3 -c 'print(" ".join(["word"] * 3000))')
status_body POST /v1/completions "{\"model\": \"tiny\", \"prompt\": \"$long\", \"max_tokens\": 5}"
check "prompt longer than the context" 400 "$st" "$body" '"code":"context_length_exceeded"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "max_tokens": 100000}'
check "max_tokens too large" 400 "$st" "$body" 'maximum context length'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "temperature": -1}'
check "bad temperature" 400 "$st" "$body" '"param":"temperature"'
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "top_p": 0}'
check "bad top_p" 400 "$st" "$body" '"param":"top_p"'
status_body POST /v1/chat/completions '{"model": "tiny", "messages": []}'
check "empty messages" 400 "$st" "$body" '"param":"messages"'
status_body POST /v1/chat/completions '{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}'
check "bad role" 400 "$st" "$body" 'wizard'
python3 -c 'print("{\"model\": \"tiny\", \"prompt\": \"" + "x" * 1500000 + "\"}")' >/tmp/fp6-e2e-big.json
status_body POST /v1/completions @/tmp/fp6-e2e-big.json
check "body over the size limit" 413 "$st" "$body" '"code":"request_too_large"'
status_body GET /v1/nothing-here
check "unknown route" 404 "$st" "$body" '"error"'
status_body GET /v1/completions
check "wrong method" 405 "$st" "$body" '"code":"method_not_allowed"'
# A chat message with a field nested 100,000 deep (once a SIGSEGV), and every depth to 85,000.
for depth in 65 1000 100000; do
  python3 -c "d=$depth; print('{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\", \"x\": ' + '['*d + ']'*d + '}]}')" >/tmp/fp6-e2e-deep.json
  status_body POST /v1/chat/completions @/tmp/fp6-e2e-deep.json
  check "JSON nested $depth deep" 400 "$st" "$body" 'nested deeper than 64'
done
printf '{"model": "tiny", "prompt": "\xff\xfe not UTF-8"}' >/tmp/fp6-e2e-utf8.json
status_body POST /v1/completions @/tmp/fp6-e2e-utf8.json
check "invalid UTF-8 in the body" 400 "$st" "$body" 'ill-formed UTF-8'
# Unauthenticated requests to made-up paths (one crafted to forge a metric line) add no label.
for i in $(seq 30); do
  curl -s -o /dev/null "$base/v1/x$i%22%7D%201%0Afp6serve_running_requests%20999"
done
metrics=$(curl -s "$base/metrics")
if grep -q '^fp6serve_running_requests 999' <<<"$metrics" || [ "$(grep -c '^fp6serve_requests_total' <<<"$metrics")" -gt 20 ]; then
  echo "FAIL metrics grew with client paths:"; grep '^fp6serve_requests_total' <<<"$metrics" | head; fail=1
else echo "ok   metrics labels are the routes', not the clients' paths"; fi
# After all that, a normal request still works.
status_body POST /v1/completions '{"model": "tiny", "prompt": "hi", "max_tokens": 4, "temperature": 0}'
check "still serving" 200 "$st" "$body" '"text_completion"'

# Load: 64 concurrent streams, a third disconnected mid-stream.
(cd "$here/js" && node load.mjs "$base/v1" "$key" "$name") || fail=1
ok=0
for _ in $(seq 50); do
  metrics=$(curl -s "$base/metrics")
  if grep -q '^fp6serve_kv_blocks_in_use 0$' <<<"$metrics" && grep -q '^fp6serve_running_requests 0$' <<<"$metrics" &&
     grep -q '^fp6serve_queue_length 0$' <<<"$metrics"; then ok=1; break; fi
  sleep 0.1
done
if [ $ok = 1 ]; then echo "ok   metrics show 0 KV blocks and 0 requests after the load"; else
  echo "FAIL metrics after load:"; grep -E 'kv_blocks|running|queue' <<<"$metrics"; fail=1; fi
grep -q 'fp6serve_time_to_first_token_seconds_count [1-9]' <<<"$metrics" || { echo "FAIL no TTFT observations"; fail=1; }
status_body GET /health; check "health after load" 200 "$st" "$body" '"ok"'

# The access log (--log-requests): answered requests, and streams whose client left (499).
grep -q 'POST /v1/completions 200 [0-9.]* ms' "$log" && grep -q "GET /v1/models/$name 200" "$log" &&
  grep -q ' 499 ' "$log" && echo "ok   access log" || { echo "FAIL access log:"; grep -c ' ms$' "$log"; fail=1; }

# Graceful shutdown.
kill -TERM $pid
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then echo "FAIL server still running after SIGTERM"; fail=1; else
  wait $pid; rc=$?; [ $rc = 0 ] && echo "ok   SIGTERM: clean exit" || { echo "FAIL exit code $rc after SIGTERM"; fail=1; }; fi
[ $fail = 0 ] || { echo "--- server log"; tail -20 "$log"; }
exit $fail
