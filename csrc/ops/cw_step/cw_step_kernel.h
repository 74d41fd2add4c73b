// Launchers of the CUDA kernels of robustkit::cw_l2_step_ (torch-free: raw pointers and a stream). Every
// [B, n] buffer is dense and contiguous; best_l2sq, success and l2sq are [B]. The caller passes l2sq zeroed
// (the reduction accumulates into it with atomics).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace robustkit {
namespace cw_step {

template <typename T>
struct CwStepArgs {
  T* w;
  T* x;
  T* exp_avg;
  T* exp_avg_sq;
  T* best_adv;
  T* best_l2sq;
  const T* x_orig;
  const T* loss_grad;
  const bool* success;
  T* l2sq;
  int64_t batch, per_sample;
  T lr, beta1, beta2, eps, inv_bias_correction1, inv_sqrt_bias_correction2, clip_min, clip_max;
};

template <typename T>
void launch_cw_l2_step(const CwStepArgs<T>& args, cudaStream_t stream);

}  // namespace cw_step
}  // namespace robustkit
