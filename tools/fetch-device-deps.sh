#!/usr/bin/env bash
# Run HERE (not on the GPU machine): downloads the Debian packages that fp6serve builds
# against and unpacks them under .device/deps (git-ignored), so the GPU machine, which has
# no network, builds with exactly these versions. tools/device-run.sh uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device/deps
rm -rf "$out" && mkdir -p "$out/debs" "$out/root"
packages=(libfmt-dev libfmt9 libspdlog-dev libspdlog1.10 nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev googletest
          libbenchmark-dev libbenchmark1debian libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2)
(cd "$out/debs" && apt-get download "${packages[@]}" >/dev/null)
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/root"; done
# Boost's headers are 160 MB; the server needs the 8 MB that Beast and Asio include, found by
# asking the compiler (Debian's libboost-dev must be installed here: tools/setup.sh does it).
probe=$(mktemp --suffix .cc)
printf '#include <boost/beast/core.hpp>\n#include <boost/beast/http.hpp>\n#include <boost/asio.hpp>\n' >"$probe"
g++ -std=c++20 -M "$probe" | tr ' \\' '\n\n' | grep '^/usr/include/boost/' | sort -u | while read -r h; do
  mkdir -p "$out/root$(dirname "$h")" && cp "$h" "$out/root$h"
done
rm -f "$probe" "$out"/debs -r
du -sh "$out"
