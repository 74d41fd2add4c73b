// Torch-free helpers for the .cu kernels: dtype tags, loads/stores in float accumulation, the one warp/block
// reduction every kernel uses, and the launch convention.
//
// The CUDA launch convention of every op: the torch-free launcher in <op>_kernel.cu takes the op's
// <Op>Launch struct (a DType and untyped device pointers), picks the element type with dispatch_floating or
// dispatch_float_double, splits batches above kMaxGridY itself when the batch is on gridDim.y, and returns
// the launch's cudaError_t; the glue in <op>_cuda.cpp turns that into a torch error with RK_CUDA_CHECK_LAUNCH.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/dtype.h"

namespace robustkit::cuda {

template <typename T>
__device__ __forceinline__ float to_acc(T v) { return static_cast<float>(v); }
__device__ __forceinline__ double to_acc(double v) { return v; }
template <>
__device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) { return static_cast<T>(v); }
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) { return __float2half(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) { return __float2bfloat16(v); }

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

struct SumOp {
  template <typename A> __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {
  template <typename A> __device__ __forceinline__ A operator()(A a, A b) const { return a > b ? a : b; }
};

template <typename A, typename Op>
__device__ __forceinline__ A warp_reduce(A v, Op op) {
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Reduces one value per thread over the block; every thread gets the result. `scratch` holds 32 values.
template <typename A, typename Op>
__device__ __forceinline__ A block_reduce(A v, Op op, A identity, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int num_warps = (blockDim.x + 31) >> 5;
  v = lane < num_warps ? scratch[lane] : identity;
  return warp_reduce(v, op);
}

// Calls f with a typed null pointer tag for the storage type named by `dtype`.
template <typename F>
cudaError_t dispatch_floating(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(static_cast<float*>(nullptr));
    case DType::kFloat64: return f(static_cast<double*>(nullptr));
    case DType::kFloat16: return f(static_cast<__half*>(nullptr));
    case DType::kBFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

// Calls f with a typed null pointer tag for float or double; the ops whose state stays in full precision.
template <typename F>
cudaError_t dispatch_float_double(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(static_cast<float*>(nullptr));
    case DType::kFloat64: return f(static_cast<double*>(nullptr));
    default: return cudaErrorInvalidValue;
  }
}

// gridDim.y and gridDim.z are at most 65535: launchers that put the batch there run it in chunks of this size.
constexpr int64_t kMaxGridY = 65535;

inline int blocks_for(int64_t n, int threads, int cap = 65535 * 8) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace robustkit::cuda
