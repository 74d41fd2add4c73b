// CUDA glue of robustkit::ensemble_temperature_ce (CUDA builds only): checks, device guard, current
// stream, empty-batch early return, contiguity, dtype mapping, launch-error check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/cuda_glue.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_kernel.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h"

namespace robustkit::ensemble_temperature_ce {
namespace {

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& logits_in, const at::Tensor& target_in,
                                                double temperature, double soft_weight, double hard_weight) {
  check_forward_args(logits_in, target_in, temperature);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t K = logits.size(0), B = logits.size(1), C = logits.size(2);
  check_targets(target, C, "ensemble_temperature_ce");
  at::Tensor loss = at::empty({B}, logits.options());
  at::Tensor stats = at::empty({kNumRowStats, K, B}, logits.options().dtype(row_stats_dtype(logits.scalar_type())));
  if (B == 0) return {loss, stats};
  RK_CUDA_CHECK_LAUNCH(
      launch_forward(to_dtype(logits.scalar_type(), "ensemble_temperature_ce", "logits"), logits.data_ptr(),
                     target.data_ptr<int64_t>(), loss.data_ptr(), stats.data_ptr(), K, B, C, temperature,
                     soft_weight, hard_weight, c10::cuda::getCurrentCUDAStream().stream()),
      "ensemble_temperature_ce");
  return {loss, stats};
}

at::Tensor backward_cuda(const at::Tensor& grad_loss_in, const at::Tensor& logits_in, const at::Tensor& target_in,
                         const at::Tensor& stats_in, double temperature, double soft_weight, double hard_weight) {
  check_backward_args(grad_loss_in, logits_in, target_in, stats_in, temperature);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor stats = stats_in.contiguous();
  const at::Tensor grad_loss = grad_loss_in.contiguous();
  check_targets(target, logits.size(2), "_ensemble_temperature_ce_backward");
  at::Tensor grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (grad.numel() == 0) return grad;
  RK_CUDA_CHECK_LAUNCH(
      launch_backward(to_dtype(logits.scalar_type(), "_ensemble_temperature_ce_backward", "logits"),
                      grad_loss.data_ptr(), logits.data_ptr(), target.data_ptr<int64_t>(), stats.data_ptr(),
                      grad.data_ptr(), logits.size(0), logits.size(1), logits.size(2), temperature, soft_weight,
                      hard_weight, c10::cuda::getCurrentCUDAStream().stream()),
      "_ensemble_temperature_ce_backward");
  return grad;
}

}  // namespace
}  // namespace robustkit::ensemble_temperature_ce

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("ensemble_temperature_ce", &robustkit::ensemble_temperature_ce::forward_cuda);
  m.impl("_ensemble_temperature_ce_backward", &robustkit::ensemble_temperature_ce::backward_cuda);
}
