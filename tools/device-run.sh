#!/usr/bin/env bash
# Runs ON the GPU machine (through the device tool), from the repository root:
# builds fp6serve with its CUDA backend, runs the CUDA tests and the benchmarks, writes full
# logs under $OUT and prints a short table last.
#
# When the working tree holds edits that must not go (others' unfinished work), run from a
# snapshot of HEAD plus your files: tools/device-snapshot.sh says how.
# Here, first: bash tools/fetch-device-deps.sh   (the GPU machine has no network)
# and: (git rev-parse --short HEAD; git diff --quiet HEAD || echo +dirty) > .device/commit
# Then call the device tool with carry [".device"] and a command such as
#   bash tools/device-run.sh                 # build + cuda tests + benchmarks
#   bash tools/device-run.sh build test      # any subset of: build test bench sanitize profile model
# If .device/fp6_llm/fp6_llm/csrc holds usyd-fsalab/fp6_llm's kernel sources (git archive of its
# fp6_llm/csrc; never committed) the GEMM benchmark also measures that kernel side by side.
# sanitize: compute-sanitizer memcheck on the split-K and rejection tests.
# model: fp6serve bench decode and prefill on the shapes in FP6SERVE_MODEL_SHAPES (default
#   "llama2-7b llama2-70b"), FP6 against the FP16 mode, with FP6SERVE_DECODE_ARGS (e.g.
#   "--batch 1,8,64") and FP6SERVE_PREFILL_ARGS (e.g. "--prompt-len 512") added.
# profile: Nsight Compute metrics of our GEMM on a few shapes (fp6serve_bench_gemm --profile).
# quality: fp6serve perplexity of every mode on the trained fixture (GPU).
# serve: the serving benchmark (fp6serve bench serve) against `fp6serve serve --random-weights`
#   for each shape in FP6SERVE_SERVE_SHAPES (default llama2-7b) and each mode in
#   FP6SERVE_SERVE_MODES (default "wf6af16 fp16"), clients FP6SERVE_SERVE_CLIENTS (default
#   8,32,64) x generation lengths FP6SERVE_SERVE_GEN (default 250,500,1000), prompts of 100
#   random ids, FP6SERVE_SERVE_ARGS added; one CSV per shape ($OUT/serve-<shape>.csv, plotted
#   here afterwards: the GPU machine has no gnuplot).
# The bench step runs the GPU benchmarks named in FP6SERVE_BENCHES (default: gemm), each with
# the arguments in FP6SERVE_BENCH_ARGS (e.g. --quick; --moe: the grouped expert GEMM of the MoE
# layer alone, on the Mixtral-8x7B and Qwen3-30B-A3B expert shapes).
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
ref=$PWD/.device/fp6_llm/fp6_llm/csrc
[ -f "$ref/fp6_linear.cu" ] && prefix+=(-DFP6SERVE_FP6_LLM_DIR="$ref")

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
  ctest --test-dir build-device -L cuda --timeout 300 --output-on-failure >"$OUT/ctest-cuda.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=$rc
  echo "cuda tests: rc=$rc in $((SECONDS - start)) s: $(grep -E 'tests passed|tests failed' "$OUT/ctest-cuda.log" | tail -1)" | tee -a "$summary"
  [ $rc -ne 0 ] && grep -E "Failure|FAILED|Expected|Which is|error" "$OUT/ctest-cuda.log" | head -40
  # The op table (a CPU-label program) runs its CUDA rows only where there is a GPU: here.
  build-device/tests/fp6serve_tests --gtest_filter='OpTable*' >"$OUT/op-table.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=$rc
  echo "op table: rc=$rc: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/op-table.log" | tr '\n' ' ')" | tee -a "$summary"
  [ $rc -ne 0 ] && grep -E "Failure|FAILED|Expected|Which is|nmse" "$OUT/op-table.log" | head -40
fi

if want bench; then
  for name in ${FP6SERVE_BENCHES:-gemm}; do
    name=fp6serve_bench_$name
    b=build-device/bench/$name
    # shellcheck disable=SC2086
    timeout 420 "$b" ${FP6SERVE_BENCH_ARGS:-} >"$OUT/$name.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "$name: rc=$rc" | tee -a "$summary"
  done
fi

if want model; then
  for shape in ${FP6SERVE_MODEL_SHAPES:-llama2-7b llama2-70b}; do
    for what in decode prefill; do
      args=${FP6SERVE_DECODE_ARGS:-}
      [ $what = prefill ] && args=${FP6SERVE_PREFILL_ARGS:-}
      # shellcheck disable=SC2086
      build-device/fp6serve bench $what --random-weights "$shape" $args \
        >"$OUT/model-$what-$shape.log" 2>&1
      rc=$?
      [ $rc -ne 0 ] && status=$rc
      echo "bench $what $shape: rc=$rc" | tee -a "$summary"
    done
  done
fi

# Starts `fp6serve serve --random-weights SHAPE --quantization-mode MODE` in the background;
# sets server_pid and server_url, or returns 1 (logged) when it does not start.
start_server() {
  local log=$OUT/serve-$1-$2.log
  build-device/fp6serve serve --random-weights "$1" --quantization-mode "$2" --port 0 --max-num-seqs 256 >"$log" 2>&1 &
  server_pid=$!
  local port=""
  for _ in $(seq 900); do
    port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$log")
    { [ -n "$port" ] || ! kill -0 $server_pid 2>/dev/null; } && break
    sleep 0.2
  done
  server_url=http://127.0.0.1:$port
  [ -n "$port" ] && return 0
  echo "serve $1 $2: did not start: $(tail -2 "$log")" | tee -a "$summary"
  kill $server_pid 2>/dev/null
  return 1
}
stop_server() {
  kill -TERM $server_pid
  wait $server_pid 2>/dev/null
}

if want serve; then
  for shape in ${FP6SERVE_SERVE_SHAPES:-llama2-7b}; do
    modes=${FP6SERVE_SERVE_MODES:-wf6af16 fp16}
    for mode in $modes; do
      start_server "$shape" "$mode" || continue
      # shellcheck disable=SC2086
      build-device/fp6serve bench serve --url "$server_url" --label "$mode" \
        --clients "${FP6SERVE_SERVE_CLIENTS:-8,32,64}" --gen-len "${FP6SERVE_SERVE_GEN:-250,500,1000}" \
        --prompt-len 100 --max-token-id 30000 --csv "$OUT/serve-$shape.csv" ${FP6SERVE_SERVE_ARGS:-} \
        >"$OUT/bench-serve-$shape-$mode.log" 2>&1
      rc=$?
      [ $rc -ne 0 ] && status=$rc
      stop_server
      echo "bench serve $shape $mode: rc=$rc" | tee -a "$summary"
      grep '^|' "$OUT/bench-serve-$shape-$mode.log"
    done
    # The engine alone at the batches the clients make: the server's inter-token latency
    # against this step time is the cost of the scheduler, detokenizer and HTTP. Contexts at
    # the middle of a 250- and a 500-token generation after a 100-token prompt.
    # shellcheck disable=SC2086
    build-device/fp6serve bench decode --random-weights "$shape" --modes "${modes// /,}" \
      --batch "${FP6SERVE_SERVE_CLIENTS:-8,32,64}" --context 225,350 >"$OUT/serve-decode-$shape.log" 2>&1
    echo "bench decode $shape (serving batches): rc=$?" | tee -a "$summary"
  done
fi

# quality: fp6serve perplexity on the trained fixture on the GPU, every FPx mode against the
# FP16 mode (KL, top-1) in the same run; transformers' FP32 perplexity of these windows is
# 10.0797 (tests/data/tiny-trained/reference.json).
if want quality; then
  m=tests/data/tiny-trained
  for mode in fp16 bf16 wf6af16 e2m3 wf5af16 wf4af16; do
    build-device/fp6serve perplexity --model $m --ids $m/eval_windows.txt --device cuda --quantization-mode $mode \
      --kl-baseline fp16 --json >"$OUT/quality-$mode.json" 2>"$OUT/quality-$mode.err"
    # The mode's own perplexity is the JSON's last "perplexity" (the first is the baseline's).
    echo "quality $mode: rc=$? $(grep -o '"perplexity": [0-9.]*' "$OUT/quality-$mode.json" | tail -1)" | tee -a "$summary"
  done
fi

# splitfuse: TTFT and inter-token latency of 32 short streams (prompt 100, 250 tokens) alone,
# then beside 4 clients sending 2000-token prompts (Dynamic SplitFuse should keep the short
# streams' inter-token latency flat while the long prompts are chunked). Llama-2-7B shape, FP6.
if want splitfuse; then
  if start_server llama2-7b wf6af16; then
    short=(--url "$server_url" --clients 32 --gen-len 250 --requests 96 --prompt-len 100 --max-token-id 30000
           --csv "$OUT/splitfuse.csv")
    build-device/fp6serve bench serve "${short[@]}" --label short-alone >"$OUT/splitfuse-alone.log" 2>&1
    build-device/fp6serve bench serve --url "$server_url" --clients 4 --gen-len 16 --requests 40 --prompt-len 2000 \
      --max-token-id 30000 --label long-prompts --csv "$OUT/splitfuse-long.csv" >"$OUT/splitfuse-long.log" 2>&1 &
    long_pid=$!
    sleep 1
    build-device/fp6serve bench serve "${short[@]}" --label short-beside-long >"$OUT/splitfuse-beside.log" 2>&1
    wait $long_pid
    stop_server
    echo "splitfuse: done" | tee -a "$summary"
    grep -h '^| 32\|^| 4 ' "$OUT"/splitfuse-*.log
  fi
fi

if want sanitize; then
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  if [ -n "$san" ]; then
    "$san" --tool memcheck --error-exitcode 9 build-device/tests/fp6serve_cuda_tests \
      --gtest_filter='*EverySplit*:*Rejects*:*Determin*:*PagedAttention*:*CudaSampling*:*EveryHopperTile*' \
      >"$OUT/sanitize.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "memcheck: rc=$rc: $(grep -E 'ERROR SUMMARY' "$OUT/sanitize.log" | tail -1)" | tee -a "$summary"
    # Shared-memory races in the kernels with hand-made pipelines (the FPx GEMMs, mbarrier rings).
    "$san" --tool racecheck --error-exitcode 9 build-device/tests/fp6serve_cuda_tests \
      --gtest_filter='*EveryHopperTile*/f16:*EverySplit*/f16' >"$OUT/racecheck.log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "racecheck: rc=$rc: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | tail -1)" | tee -a "$summary"
  else
    echo "memcheck: no compute-sanitizer on this machine" | tee -a "$summary"
  fi
fi

if want profile; then
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  if [ -n "$ncu" ]; then
    "$ncu" -k regex:"fpx_(gemm|wgmma)" --csv --page details --section SpeedOfLight --section Occupancy \
      --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats \
      --section ComputeWorkloadAnalysis \
      build-device/bench/fp6serve_bench_gemm --profile >"$OUT/ncu.csv" 2>"$OUT/ncu.err"
    rc=$?
    echo "profile: rc=$rc ($(grep -cE "fpx_(gemm|wgmma)" "$OUT/ncu.csv") kernel metrics rows in ncu.csv)" | tee -a "$summary"
  else
    echo "profile: no ncu on this machine" | tee -a "$summary"
  fi
fi

echo
cat "$summary"
for f in "$OUT"/*.log; do
  # Benchmarks print their summary table last, between markers.
  sed -n '/^=== table ===/,/^=== end ===/p' "$f"
done
exit $status
