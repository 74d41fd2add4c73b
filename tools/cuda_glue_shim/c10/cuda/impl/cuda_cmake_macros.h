// Stand-in for the header a CUDA build of torch generates at build time and a CPU wheel lacks. Used
// only by tools/cuda_check.sh to syntax-check the *_cuda.cpp glue on machines with a CPU torch.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
