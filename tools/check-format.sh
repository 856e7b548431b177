#!/usr/bin/env bash
# Fails (listing the files) when a C++/CUDA source is not formatted as .clang-format says.
# Fix with: clang-format -i $(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | grep -v node_modules)
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "not formatted (clang-format -i FILE):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "format: ${#files[@]} files as .clang-format says"
