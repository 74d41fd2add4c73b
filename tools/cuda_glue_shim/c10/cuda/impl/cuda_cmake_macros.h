// Stand-in for the header a CUDA build of torch generates at build time and a CPU wheel lacks. Used
// only by tools/cuda_check.sh to syntax-check the *_cuda.cpp glue on machines with a CPU torch.
// Mirrors torch 2.13.0's generated c10/cuda/impl/cuda_cmake_macros.h (tests/ops/test_build_config.py fails
// when the installed torch differs: re-check this header against that torch's CUDA build, then update
// the version here).
// robustkit-shim-torch-version: 2.13.0
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
