# Sourced by the server tests: `start_server LOG ARGS...` runs `$bin serve --port 0 ARGS...`
# in the background with its output in LOG, waits (up to 20 s) for the address it prints, and
# sets pid and base (http://127.0.0.1:PORT); exits the test when the server does not start.
# The caller's EXIT trap should kill $pid.
start_server() {
  local log=$1
  shift
  "$bin" serve --port 0 "$@" >"$log" 2>&1 &
  pid=$!
  local port=
  for _ in $(seq 200); do
    port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    [ -n "$port" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "server did not start:"; cat "$log"; exit 1; }
  base=http://127.0.0.1:$port
}
