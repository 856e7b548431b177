#!/usr/bin/env bash
# cmake --install, then the README's C++ example built against the installed package twice:
# by a CMake project (find_package(fp6serve)) and by pkg-config alone; both run on the trained
# model and print 2 answers.
#   Usage: run.sh BUILD_DIR MODEL_DIR
set -euo pipefail
build=$1
model=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
if grep -q 'CUDAToolkit' "$work/prefix/lib/cmake/fp6serve/fp6serveConfig.cmake" && [ -d /usr/local/cuda ]; then
  cuda=(-DCUDAToolkit_ROOT=/usr/local/cuda)
else
  cuda=()
fi
cmake -S "$here" -B "$work/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" "${cuda[@]}" \
  >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/cmake" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
out=$("$work/cmake/example" "$model")
echo "$out"
[ "$(grep -c 'tokens (' <<<"$out")" = 2 ] || { echo "FAIL the CMake-built example"; exit 1; }
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
# shellcheck disable=SC2046
g++ -O1 "$here/example.cc" -o "$work/example-pc" $(pkg-config --cflags --libs fp6serve)
out=$("$work/example-pc" "$model")
[ "$(grep -c 'tokens (' <<<"$out")" = 2 ] || { echo "FAIL the pkg-config-built example"; echo "$out"; exit 1; }
echo "ok   installed package: CMake and pkg-config builds of the README's example run"
