// CUDA glue of robustkit::cw_l2_step_: checks, device guard, current stream, early return on empty input,
// dtype dispatch, launch-error check. Compiled only in CUDA builds.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "ops/cw_step/cw_step.h"
#include "ops/cw_step/cw_step_kernel.h"

namespace robustkit {
namespace cw_step {
namespace {

// The per-sample reduction puts the batch on the grid's y dimension.
constexpr int64_t kMaxCudaBatch = 65535;

at::Tensor cw_l2_step_cuda(at::Tensor w, at::Tensor x, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                           at::Tensor best_adv, at::Tensor best_l2sq, const at::Tensor& x_orig_in,
                           const at::Tensor& loss_grad_in, const at::Tensor& success_in, int64_t step, double lr,
                           double beta1, double beta2, double eps, double clip_min, double clip_max) {
  check_args(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig_in, loss_grad_in, success_in, step, lr, beta1,
             beta2, eps, clip_min, clip_max);
  RK_CHECK(w.size(0) <= kMaxCudaBatch, kOp, "w must hold at most ", kMaxCudaBatch,
           " samples per call on CUDA, got B = ", w.size(0));
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor x_orig = x_orig_in.contiguous(), loss_grad = loss_grad_in.contiguous();
  const at::Tensor success = success_in.contiguous();
  const int64_t B = w.size(0);
  at::Tensor l2sq = at::zeros({B}, w.options());
  if (w.numel() == 0) return l2sq;
  const double inv_bc1 = 1.0 / (1.0 - std::pow(beta1, static_cast<double>(step)));
  const double inv_sqrt_bc2 = 1.0 / std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "cw_l2_step_cuda", [&] {
    using T = scalar_t;
    CwStepArgs<T> args{w.data_ptr<T>(), x.data_ptr<T>(), exp_avg.data_ptr<T>(), exp_avg_sq.data_ptr<T>(),
                       best_adv.data_ptr<T>(), best_l2sq.data_ptr<T>(), x_orig.data_ptr<T>(),
                       loss_grad.data_ptr<T>(), success.data_ptr<bool>(), l2sq.data_ptr<T>(), B,
                       w.numel() / B, T(lr), T(beta1), T(beta2), T(eps), T(inv_bc1), T(inv_sqrt_bc2),
                       T(clip_min), T(clip_max)};
    launch_cw_l2_step<T>(args, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return l2sq;
}

}  // namespace
}  // namespace cw_step
}  // namespace robustkit

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) { m.impl("cw_l2_step_", &robustkit::cw_step::cw_l2_step_cuda); }
