#!/usr/bin/env bash
# Builds the fuzz targets with clang (ASan + UBSan + libFuzzer) into build-fuzz/ and runs each
# for SECONDS (default 600) on a copy of its seed corpus in tests/fuzz/corpus/. New findings
# are left as crash-*/leak-*/timeout-* files in build-fuzz/findings/.
#   tools/fuzz.sh [SECONDS] [TARGET...]     e.g. tools/fuzz.sh 3600 jinja
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DFP6SERVE_CUDA=OFF -DFP6SERVE_BUILD_BENCH=OFF -DFP6SERVE_SANITIZE=address,undefined -DFP6SERVE_FUZZ=ON >/dev/null
mapfile -t targets < <(cd tests/fuzz && ls *_fuzz.cc | sed 's/_fuzz.cc$//')
[ $# -gt 0 ] && targets=("$@")
cmake --build build-fuzz --target $(printf '%s_fuzz ' "${targets[@]}")
mkdir -p build-fuzz/findings
status=0
for t in "${targets[@]}"; do
  echo "=== $t ($seconds s)"
  (cd build-fuzz/findings && bash ../../tests/fuzz/run.sh "../tests/${t}_fuzz" "../../tests/fuzz/corpus/$t" "$seconds") || status=1
done
exit $status
