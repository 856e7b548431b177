#!/usr/bin/env bash
# Installs fp6serve's build dependencies (Debian packages only) and builds it into build/.
# The CUDA backend is built too when nvcc is found (e.g. /usr/local/cuda/bin/nvcc); pass
# -DFP6SERVE_CUDA=OFF for a CPU-only build. Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake ninja-build g++ pkg-config ccache libgtest-dev libgmock-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libboost-dev libpcre2-dev libutf8proc-dev
          clang-format gnuplot-nox
          python3-dev pybind11-dev python3-pytest python3-pip)  # the Python package (docs/python.md)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build

# The official openai SDK, the client of the server's end-to-end test (from the npm registry).
if command -v npm >/dev/null 2>&1; then
  npm ci --silent --no-audit --no-fund --prefix tests/server/js
fi
