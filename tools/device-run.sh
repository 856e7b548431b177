#!/usr/bin/env bash
# Runs ON the GPU machine (through the device tool), from the repository root:
# builds fp6serve with its CUDA backend, runs the CUDA tests and the benchmarks, writes full
# logs under $OUT and prints a short table last.
#
# Here, first: bash tools/fetch-device-deps.sh   (the GPU machine has no network)
# and: (git rev-parse --short HEAD; git diff --quiet HEAD || echo +dirty) > .device/commit
# Then call the device tool with carry [".device"] and a command such as
#   bash tools/device-run.sh                 # build + cuda tests + benchmarks
#   bash tools/device-run.sh build test      # any subset of: build test bench
# The bench step runs the GPU benchmarks named in FP6SERVE_BENCHES (default: gemm), each with
# the arguments in FP6SERVE_BENCH_ARGS (e.g. --quick).
set -uo pipefail
OUT=${OUT:-/tmp/fp6serve-out}
mkdir -p "$OUT"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test bench)
want() { [[ " ${steps[*]} " == *" $1 "* ]]; }

deps=$PWD/.device/deps/root
if [ -d "$deps" ]; then
  # The carried Debian packages say prefix=/usr in their pkg-config files: point them here.
  for pc in "$deps"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
    sed -i "s|^prefix=/usr\$|prefix=$deps/usr|" "$pc"
  done
  export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig:$deps/usr/share/pkgconfig
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  prefix=(-DCMAKE_PREFIX_PATH="$deps/usr")
else
  echo "warning: no .device/deps (run tools/fetch-device-deps.sh here and carry .device)"
  prefix=()
fi

summary=$OUT/summary.txt
: >"$summary"
{
  echo "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  # The tree arrives without .git: the caller writes the commit to .device/commit first
  # (git rev-parse --short HEAD > .device/commit; git diff --quiet || echo +dirty >> ...).
  echo "commit: $(cat .device/commit 2>/dev/null | tr -d '\n' || echo unknown)"
  echo "date:   $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee -a "$summary"

status=0
if want build; then
  start=$SECONDS
  cmake -S . -B build-device -G Ninja -DCMAKE_BUILD_TYPE=Release -DFP6SERVE_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a-real "${prefix[@]}" >"$OUT/cmake.log" 2>&1 &&
    cmake --build build-device -j "$(nproc)" >"$OUT/build.log" 2>&1
  rc=$?
  echo "build: rc=$rc in $((SECONDS - start)) s" | tee -a "$summary"
  if [ $rc -ne 0 ]; then
    tail -40 "$OUT/cmake.log" "$OUT/build.log"
    exit $rc
  fi
fi

if want test; then
  start=$SECONDS
  ctest --test-dir build-device -L cuda --output-on-failure >"$OUT/ctest-cuda.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=$rc
  echo "cuda tests: rc=$rc in $((SECONDS - start)) s: $(grep -E 'tests passed|tests failed' "$OUT/ctest-cuda.log" | tail -1)" | tee -a "$summary"
  [ $rc -ne 0 ] && grep -E "Failure|FAILED|Expected|Which is|error" "$OUT/ctest-cuda.log" | head -40
fi

if want bench; then
  for name in ${FP6SERVE_BENCHES:-gemm}; do
    name=fp6serve_bench_$name
    b=build-device/bench/$name
    # shellcheck disable=SC2086
    "$b" ${FP6SERVE_BENCH_ARGS:-} >"$OUT/$name.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "$name: rc=$rc" | tee -a "$summary"
  done
fi

echo
cat "$summary"
for f in "$OUT"/*.log; do
  # Benchmarks print their summary table last, between markers.
  sed -n '/^=== table ===/,/^=== end ===/p' "$f"
done
exit $status
