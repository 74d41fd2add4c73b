// CUDA glue of robustkit::sign_momentum_step_ (CUDA builds only): checks, device guard, current stream,
// empty early return, dense layout (or contiguous copies written back), dtype mapping, launch check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda_glue.h"
#include "ops/sign_step/sign_step.h"
#include "ops/sign_step/sign_step_kernel.h"

namespace robustkit {
namespace sign_step {
namespace {

constexpr int64_t kMaxSamplesPerLaunch = 65535;  // gridDim.y

void run_dense(at::Tensor& x_adv, const at::Tensor& x_orig, const at::Tensor& grad, c10::optional<at::Tensor>& momentum,
               const c10::optional<at::Tensor>& step_t, const c10::optional<at::Tensor>& eps_t, double step_size,
               double eps, double decay, GradNorm grad_norm, Norm norm, double clip_min, double clip_max) {
  const int64_t B = x_adv.size(0);
  const int64_t n = x_adv.numel() / B;
  const at::Tensor step_c = step_t.has_value() ? step_t->contiguous() : at::Tensor();
  const at::Tensor eps_c = eps_t.has_value() ? eps_t->contiguous() : at::Tensor();
  at::Tensor workspace = at::zeros({3, B}, x_adv.options().memory_format(at::MemoryFormat::Contiguous));
  const auto elem = x_adv.element_size();
  auto offset = [&](const at::Tensor& t, int64_t b, int64_t per) -> char* {
    return t.defined() ? static_cast<char*>(t.data_ptr()) + b * per * elem : nullptr;
  };
  for (int64_t b0 = 0; b0 < B; b0 += kMaxSamplesPerLaunch) {
    const int64_t nb = std::min(kMaxSamplesPerLaunch, B - b0);
    at::Tensor ws = workspace.narrow(1, b0, nb).contiguous();
    StepLaunch args{to_dtype(x_adv.scalar_type(), kOp, "x_adv"),
                    offset(x_adv, b0, n),
                    offset(x_orig, b0, n),
                    offset(grad, b0, n),
                    momentum.has_value() ? offset(*momentum, b0, n) : nullptr,
                    offset(step_c, b0, 1),
                    offset(eps_c, b0, 1),
                    ws.data_ptr(),
                    nb,
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
}

void sign_momentum_step_cuda(at::Tensor x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
                             c10::optional<at::Tensor> momentum, const c10::optional<at::Tensor>& step_t,
                             const c10::optional<at::Tensor>& eps_t, double step_size, double eps, double decay,
                             c10::string_view grad_norm_s, c10::string_view norm_s, double clip_min,
                             double clip_max) {
  check_args(x_adv, x_orig, grad, momentum, step_t, eps_t, step_size, eps, clip_min, clip_max);
  const GradNorm grad_norm = parse_grad_norm(std::string(grad_norm_s));
  const Norm norm = parse_norm(std::string(norm_s));
  if (x_adv.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(x_adv.device());
  with_dense_sample_layout(x_adv, x_orig, grad, momentum,
                           [&](at::Tensor& x, const at::Tensor& x0, const at::Tensor& g, c10::optional<at::Tensor>& m) {
                             run_dense(x, x0, g, m, step_t, eps_t, step_size, eps, decay, grad_norm, norm, clip_min,
                                       clip_max);
                           });
}

}  // namespace
}  // namespace sign_step
}  // namespace robustkit

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("sign_momentum_step_", &robustkit::sign_step::sign_momentum_step_cuda);
}
