#!/usr/bin/env bash
# Run HERE (not on the GPU machine): downloads the Debian packages that fp6serve builds
# against and unpacks them under .device/deps (git-ignored), so the GPU machine, which has
# no network, builds with exactly these versions. tools/device-run.sh uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.device/deps
rm -rf "$out" && mkdir -p "$out/debs" "$out/root"
packages=(libfmt-dev libfmt9 libspdlog-dev libspdlog1.10 nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev googletest
          libbenchmark-dev libbenchmark1debian libpcre2-dev libpcre2-8-0 libcpp-httplib-dev libcpp-httplib0.11 libutf8proc-dev libutf8proc2
          libbrotli-dev libbrotli1 libssl-dev zlib1g-dev)  # the last four: what cpp-httplib's pkg-config file requires
(cd "$out/debs" && apt-get download "${packages[@]}" >/dev/null)
for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/root"; done
rm -rf "$out/debs"
du -sh "$out"
