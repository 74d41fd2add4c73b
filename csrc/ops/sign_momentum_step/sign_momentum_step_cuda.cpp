// CUDA glue of robustkit::sign_momentum_step_ (CUDA builds only): checks, device guard, current stream,
// empty early return, dense layout (or contiguous copies written back), dtype mapping, launch check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_glue.h"
#include "ops/sign_momentum_step/sign_momentum_step.h"
#include "ops/sign_momentum_step/sign_momentum_step_kernel.h"

namespace robustkit::sign_momentum_step {
namespace {

void run_dense(at::Tensor& x_adv, const at::Tensor& x_orig, const at::Tensor& grad, c10::optional<at::Tensor>& momentum,
               const c10::optional<at::Tensor>& step_t, const c10::optional<at::Tensor>& eps_t, double step_size,
               double eps, double decay, GradNorm grad_norm, Norm norm, double clip_min, double clip_max) {
  const int64_t B = x_adv.size(0);
  const int64_t n = x_adv.numel() / B;
  const at::Tensor step_c = step_t.has_value() ? step_t->contiguous() : at::Tensor();
  const at::Tensor eps_c = eps_t.has_value() ? eps_t->contiguous() : at::Tensor();
  // Per-sample sums in double (SquareSum), whatever x_adv's dtype.
  at::Tensor workspace = at::zeros({3, B}, x_adv.options().dtype(at::kDouble).memory_format(at::MemoryFormat::Contiguous));
  auto ptr = [](const at::Tensor& t) -> void* { return t.defined() ? t.data_ptr() : nullptr; };
  StepLaunch args{to_dtype(x_adv.scalar_type(), kOp, "x_adv"),
                  x_adv.data_ptr(),
                  x_orig.data_ptr(),
                  grad.data_ptr(),
                  momentum.has_value() ? momentum->data_ptr() : nullptr,
                  ptr(step_c),
                  ptr(eps_c),
                  workspace.data_ptr(),
                  B,
                  n,
                  step_size,
                  eps,
                  decay,
                  clip_min,
                  clip_max,
                  static_cast<int>(grad_norm),
                  static_cast<int>(norm)};
  RK_CUDA_CHECK_LAUNCH(launch_sign_momentum_step(args, c10::cuda::getCurrentCUDAStream().stream()), kOp);
}

void sign_momentum_step_cuda(at::Tensor x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
                             c10::optional<at::Tensor> momentum, const c10::optional<at::Tensor>& step_t,
                             const c10::optional<at::Tensor>& eps_t, double step_size, double eps, double decay,
                             c10::string_view grad_norm_s, c10::string_view norm_s, double clip_min,
                             double clip_max) {
  check_args(x_adv, x_orig, grad, momentum, step_t, eps_t, step_size, eps, clip_min, clip_max);
  const GradNorm grad_norm = parse_grad_norm(std::string(grad_norm_s));
  const Norm norm = parse_norm(kOp, norm_s);
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  with_dense_sample_layout(x_adv, x_orig, grad, momentum,
                           [&](at::Tensor& x, const at::Tensor& x0, const at::Tensor& g, c10::optional<at::Tensor>& m) {
                             run_dense(x, x0, g, m, step_t, eps_t, step_size, eps, decay, grad_norm, norm, clip_min,
                                       clip_max);
                           });
}

}  // namespace
}  // namespace robustkit::sign_momentum_step

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("sign_momentum_step_", &robustkit::sign_momentum_step::sign_momentum_step_cuda);
}
