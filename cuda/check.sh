#!/bin/sh
# The GPU check of the CUDA backend (issue 13), as one short run.
#
#   sh cuda/check.sh --prepare   here, without a GPU: puts the one header the GPU machine lacks
#                                (doctest) under .gpu-carry/ (git-ignored), compiles every .cu
#                                for sm_80 and sm_90, and runs the tests (exit 77 = no GPU, the
#                                no-device errors checked).
#   sh cuda/check.sh             on the GPU machine (carry .gpu-carry): builds the tests for the
#                                GPU it finds, runs them, and writes one summary file to
#                                ${OUT:-build/cuda-check}/summary.txt. Needs only nvcc and a host
#                                g++ (no CMake, Eigen or xtensor): the device headers use rtb/math
#                                and rtb/error.hpp alone. Well under a minute on 16 cores.
set -eu
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
out=${OUT:-build/cuda-check}
mkdir -p "$out" .gpu-carry/include/doctest
summary="$out/summary.txt"
if [ ! -f .gpu-carry/include/doctest/doctest.h ]; then
  cp /usr/include/doctest/doctest.h .gpu-carry/include/doctest/ 2>/dev/null || {
    echo "check.sh: doctest.h is neither under .gpu-carry/ nor in /usr/include/doctest; run 'sh cuda/check.sh --prepare' where doctest-dev is installed and carry .gpu-carry" >&2
    exit 2
  }
fi
flags="-std=c++20 -O2 -Iinclude -Icuda/include -I.gpu-carry/include -Xcompiler=-Wall,-Wextra"
if [ "${1:-}" = "--prepare" ]; then
  arch="-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90"
  flags="$flags -Xcompiler=-Werror --Werror=all-warnings"  # here, as in CI; not on a GPU machine's other g++
else
  arch="-arch=native"  # the GPU this runs on (the check runs there; CI and CMake never use native)
fi
{
  echo "rtb cuda check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  "$NVCC" --version | tail -1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: no GPU visible"
} > "$summary"
status=0
for src in cuda/tests/*.cu; do
  name=$(basename "$src" .cu)
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$NVCC" $flags $arch -o "$out/$name" "$src"
  echo "built $name in $(( $(date +%s) - start )) s" >> "$summary"
  rc=0
  "$out/$name" > "$out/$name.log" 2>&1 || rc=$?
  echo "ran $name: exit $rc" >> "$summary"
  tail -5 "$out/$name.log" >> "$summary"
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then status=1; fi
  if [ "$rc" -eq 77 ] && [ "${1:-}" != "--prepare" ]; then status=1; fi  # on the GPU machine a skip is a failure
done
cat "$summary"
exit $status
