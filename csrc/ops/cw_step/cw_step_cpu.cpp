// CPU glue of robustkit::cw_l2_step_: checks, dtype dispatch and one task per sample; the per-sample loop
// is in the torch-free cw_step_cpu_kernel.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "ops/cw_step/cw_step.h"
#include "ops/cw_step/cw_step_cpu_kernel.h"

namespace robustkit {
namespace cw_step {
namespace {

at::Tensor cw_l2_step_cpu(at::Tensor w, at::Tensor x, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                          at::Tensor best_adv, at::Tensor best_l2sq, const at::Tensor& x_orig_in,
                          const at::Tensor& loss_grad_in, const at::Tensor& success_in, int64_t step, double lr,
                          double beta1, double beta2, double eps, double clip_min, double clip_max) {
  check_args(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig_in, loss_grad_in, success_in, step, lr, beta1,
             beta2, eps, clip_min, clip_max);
  const at::Tensor x_orig = x_orig_in.contiguous(), loss_grad = loss_grad_in.contiguous();
  const at::Tensor success = success_in.contiguous();
  const int64_t B = w.size(0);
  const int64_t n = B == 0 ? 0 : w.numel() / B;
  at::Tensor l2sq = at::zeros({B}, w.options());
  if (w.numel() == 0) return l2sq;
  const double inv_bc1 = 1.0 / (1.0 - std::pow(beta1, static_cast<double>(step)));
  const double inv_sqrt_bc2 = 1.0 / std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "cw_l2_step", [&] {
    using T = scalar_t;
    T* wp = w.data_ptr<T>();
    T* xp = x.data_ptr<T>();
    T* mp = exp_avg.data_ptr<T>();
    T* vp = exp_avg_sq.data_ptr<T>();
    T* bp = best_adv.data_ptr<T>();
    T* blp = best_l2sq.data_ptr<T>();
    const T* xop = x_orig.data_ptr<T>();
    const T* gp = loss_grad.data_ptr<T>();
    const bool* sp = success.data_ptr<bool>();
    T* lp = l2sq.data_ptr<T>();
    const StepCoefs<T> coefs{T(clip_min), T(clip_max), T(lr), T(beta1), T(beta2), T(eps), T(inv_bc1),
                             T(inv_sqrt_bc2)};
    // ~64k elements per task: small calls run inline instead of paying a thread hand-off.
    at::parallel_for(0, B, std::max<int64_t>(1, (int64_t{1} << 16) / n), [&](int64_t s0, int64_t s1) {
      for (int64_t b = s0; b < s1; ++b) {
        const int64_t off = b * n;
        lp[b] = step_sample(wp + off, xp + off, mp + off, vp + off, bp + off, blp + b, xop + off, gp + off, sp[b],
                            n, coefs);
      }
    });
  });
  return l2sq;
}

}  // namespace
}  // namespace cw_step
}  // namespace robustkit

TORCH_LIBRARY_IMPL(robustkit, CPU, m) { m.impl("cw_l2_step_", &robustkit::cw_step::cw_l2_step_cpu); }
