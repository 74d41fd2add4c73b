// HOST_DEVICE marks per-element math that both the CPU kernels (g++) and the CUDA kernels (nvcc) compile.
// This header must stay free of torch and of CUDA runtime headers so the .cu files remain torch-free.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif
