// CPU glue of robustkit::cw_l2_step_: checks, dtype dispatch and one task per sample; the per-sample loop
// is in the torch-free cw_l2_step_cpu_kernel.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/parallel.h"
#include "ops/cw_l2_step/cw_l2_step.h"
#include "ops/cw_l2_step/cw_l2_step_cpu_kernel.h"

// The op's schema, beside its kernels (in the CPU file, which every build compiles).
TORCH_LIBRARY_FRAGMENT(robustkit, m) {
  // One C&W L2 Adam step in tanh space, in place; returns ||x - x_orig||_2^2 [B]; see robustkit/ops/cw_l2_step.py.
  m.def("cw_l2_step_(Tensor(a!) w, Tensor(b!) x, Tensor(c!) exp_avg, Tensor(d!) exp_avg_sq, Tensor(e!) best_adv, "
        "Tensor(f!) best_l2sq, Tensor x_orig, Tensor loss_grad, Tensor success, int step, float lr, float beta1, "
        "float beta2, float adam_eps, float clip_min, float clip_max) -> Tensor");
}

namespace robustkit::cw_l2_step {
namespace {

at::Tensor cw_l2_step_cpu(at::Tensor w, at::Tensor x, at::Tensor exp_avg, at::Tensor exp_avg_sq,
                          at::Tensor best_adv, at::Tensor best_l2sq, const at::Tensor& x_orig_in,
                          const at::Tensor& loss_grad_in, const at::Tensor& success_in, int64_t step, double lr,
                          double beta1, double beta2, double adam_eps, double clip_min, double clip_max) {
  check_args(w, x, exp_avg, exp_avg_sq, best_adv, best_l2sq, x_orig_in, loss_grad_in, success_in, step, lr, beta1,
             beta2, adam_eps, clip_min, clip_max);
  const at::Tensor x_orig = x_orig_in.contiguous(), loss_grad = loss_grad_in.contiguous();
  const at::Tensor success = success_in.contiguous();
  const int64_t B = w.size(0);
  const int64_t n = B == 0 ? 0 : w.numel() / B;
  at::Tensor l2sq = at::zeros({B}, w.options());
  if (w.numel() == 0) return l2sq;
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
    const CwCoefs<T> coefs = make_coefs<T>(clip_min, clip_max, lr, beta1, beta2, adam_eps, step);
    at::parallel_for(0, B, items_per_task(n), [&](int64_t s0, int64_t s1) {
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
}  // namespace robustkit::cw_l2_step

TORCH_LIBRARY_IMPL(robustkit, CPU, m) { m.impl("cw_l2_step_", &robustkit::cw_l2_step::cw_l2_step_cpu); }
