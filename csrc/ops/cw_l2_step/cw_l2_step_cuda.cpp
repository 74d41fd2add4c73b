// CUDA glue of robustkit::cw_l2_step_ (CUDA builds only): checks, device guard, current stream, empty-input
// return, contiguity, dtype mapping, launch-error check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_glue.h"
#include "ops/cw_l2_step/cw_l2_step.h"
#include "ops/cw_l2_step/cw_l2_step_kernel.h"

namespace robustkit::cw_l2_step {
namespace {

at::Tensor cw_l2_step_cuda(at::Tensor w, at::Tensor x, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                           at::Tensor best_adv, at::Tensor best_l2sq, const at::Tensor& x_orig_in,
                           const at::Tensor& loss_grad_in, const at::Tensor& success_in, int64_t step, double lr,
                           double beta1, double beta2, double adam_eps, double clip_min, double clip_max) {
  check_args(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig_in, loss_grad_in, success_in, step, lr, beta1,
             beta2, adam_eps, clip_min, clip_max);
  const c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor x_orig = x_orig_in.contiguous(), loss_grad = loss_grad_in.contiguous();
  const at::Tensor success = success_in.contiguous();
  const int64_t B = w.size(0);
  at::Tensor l2sq = at::zeros({B}, w.options());
  if (w.numel() == 0) return l2sq;
  const CwStepLaunch args{to_dtype(w.scalar_type(), kOp, "w"), w.data_ptr(), x.data_ptr(), exp_avg.data_ptr(),
                          exp_avg_sq.data_ptr(), best_adv.data_ptr(), best_l2sq.data_ptr(), x_orig.data_ptr(),
                          loss_grad.data_ptr(), success.data_ptr<bool>(), l2sq.data_ptr(), B, w.numel() / B, step,
                          lr, beta1, beta2, adam_eps, clip_min, clip_max};
  RK_CUDA_CHECK_LAUNCH(launch_cw_l2_step(args, c10::cuda::getCurrentCUDAStream().stream()), kOp);
  return l2sq;
}

}  // namespace
}  // namespace robustkit::cw_l2_step

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) { m.impl("cw_l2_step_", &robustkit::cw_l2_step::cw_l2_step_cuda); }
