// Torch-free launcher of the sign-momentum step CUDA kernels (sign_momentum_step_kernel.cu).
// All tensors are device pointers to dense [B, n] blocks in one shared element order; momentum,
// step_per_sample and eps_per_sample may be null. `workspace` is 3 * B zero-initialised doubles (per-sample
// |grad| sum, ||g||^2, ||delta||^2, summed in double; see SquareSum). Any batch size: the launcher runs batches
// above 65535 (gridDim.y) in chunks.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace robustkit::sign_momentum_step {

struct StepLaunch {
  DType dtype;  // kFloat32 or kFloat64
  void* x_adv;
  const void* x_orig;
  const void* grad;
  void* momentum;
  const void* step_per_sample;
  const void* eps_per_sample;
  void* workspace;
  int64_t batch, per_sample;
  double step_size, eps, decay, clip_min, clip_max;
  int grad_norm;  // GradNorm
  int norm;       // Norm
};

cudaError_t launch_sign_momentum_step(const StepLaunch& args, cudaStream_t stream);

}  // namespace robustkit::sign_momentum_step
