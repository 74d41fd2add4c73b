// Torch glue shared by the *_cuda.cpp files (CUDA builds only): dtype mapping and the launch-error check.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace robustkit {

inline DType to_dtype(at::ScalarType t, const char* op, const char* name) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", c10::getDtypeNames(t).first);
  }
}

// Launchers return the cudaError_t of the launch; this turns a failure into a torch error naming the op.
#define RK_CUDA_CHECK_LAUNCH(expr, op)                                                          \
  do {                                                                                          \
    const cudaError_t rk_err = (expr);                                                          \
    TORCH_CHECK(rk_err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(rk_err)); \
  } while (0)

}  // namespace robustkit
