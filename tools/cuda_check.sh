#!/usr/bin/env bash
# Compile-checks the CUDA code on a machine without a GPU (and with a CPU build of torch):
#   1. every torch-free csrc/ops/*/*_kernel.cu compiles on its own with nvcc for every architecture in
#      csrc/cuda_archs.txt (the list setup.py and CMakeLists.txt build for);
#   2. every *_cuda.cpp glue file passes a g++ syntax check against torch's and CUDA's headers.
# A failure exits non-zero, so `make test` (and CI) fails on CUDA code that does not compile.
# $PYTHON (default python3) is the interpreter whose torch headers the glue is checked against.
# `tools/cuda_check.sh --list-archs` prints the nvcc -arch values and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# "8.0;9.0" -> "sm_80 sm_90" (comment lines skipped).
archs=$(grep -v '^#' csrc/cuda_archs.txt | tr ';' ' ' | tr -s ' \n' ' ' | sed 's/\([0-9]*\)\.\([0-9]*\)/sm_\1\2/g; s/^ *//; s/ *$//')
if [ "${1:-}" = "--list-archs" ]; then
  echo "$archs"
  exit 0
fi
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "cuda-check: nvcc not found, skipped"
  exit 0
fi
# nvcc on PATH may be a wrapper script: ask nvcc itself where its toolkit (and headers) are.
if [ -z "${CUDA_HOME:-}" ]; then
  top=$("$NVCC" --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
  CUDA_HOME=$(cd "${top:-/usr/local/cuda/bin/..}" && pwd)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for cu in csrc/ops/*/*_kernel.cu; do
  for arch in $archs; do
    "$NVCC" -c -std=c++17 -arch=$arch -Icsrc -I"$(dirname "$cu")" "$cu" -o "$tmp/k.o"
    n=$((n + 1))
  done
  echo "cuda-check: nvcc $archs ok  $cu"
done
torch_includes=$("$PYTHON" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
py_include=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
for glue in csrc/ops/*/*_cuda.cpp; do
  # The shim goes last so a CUDA torch's real generated header wins where it exists.
  g++ -fsyntax-only -std=c++20 -DROBUSTKIT_WITH_CUDA=1 -Icsrc $torch_includes -I"$CUDA_HOME/include" \
      -I"$py_include" -Itools/cuda_glue_shim "$glue" 2>&1 | sed 's/^/  /'
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "cuda-check: glue failed: $glue"; exit 1; }
  echo "cuda-check: g++ syntax ok         $glue"
done
echo "cuda-check: $n kernel compiles passed"
