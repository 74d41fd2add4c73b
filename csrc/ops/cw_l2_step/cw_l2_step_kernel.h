// Launcher of the CUDA kernels of robustkit::cw_l2_step_ (torch-free: untyped device pointers, a DType and a
// stream). Every [B, n] buffer is dense and contiguous; best_l2sq, success and l2sq are [B]. The caller passes
// l2sq zeroed (the reduction accumulates into it with atomics). Any batch size: the launcher runs the
// per-sample reduction, whose batch is on gridDim.y, in chunks of 65535 samples.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace robustkit::cw_l2_step {

struct CwStepLaunch {
  DType dtype;  // kFloat32 or kFloat64
  void* w;
  void* x;
  void* exp_avg;
  void* exp_avg_sq;
  void* best_adv;
  void* best_l2sq;
  const void* x_orig;
  const void* loss_grad;
  const bool* success;
  void* l2sq;
  int64_t batch, per_sample;
  int64_t step;  // Adam's step count, from 1
  double lr, beta1, beta2, adam_eps, clip_min, clip_max;
};

cudaError_t launch_cw_l2_step(const CwStepLaunch& args, cudaStream_t stream);

}  // namespace robustkit::cw_l2_step
