// CPU kernel of robustkit::sign_momentum_step_: one task per sample; L-inf takes 2 passes over a
// sample (|grad| sum, update), L2 takes up to 4 (|grad| sum, momentum + ||g||, move + ||delta||, project).
// The loops stay beside torch's headers: the torch-free *_cpu_kernel.cpp split of ensemble_temperature_ce and
// cw_l2_step is for loops gcc was measured to stop vectorizing here; these were not measured to, so they are
// not split (measure, e.g. with -fopt-info-vec, before moving them).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "common/cpu_vectorize.h"
#include "ops/sign_momentum_step/sign_momentum_step.h"
#include "ops/sign_momentum_step/sign_momentum_step_math.h"

// The op's schema, beside its kernels (in the CPU file, which every build compiles).
TORCH_LIBRARY_FRAGMENT(robustkit, m) {
  // Updates x_adv and momentum in place; see robustkit/ops/sign_momentum_step.py for the semantics.
  m.def("sign_momentum_step_(Tensor(a!) x_adv, Tensor x_orig, Tensor grad, Tensor(b!)? momentum, "
        "Tensor? step_size_per_sample, Tensor? eps_per_sample, float step_size, float eps, float decay, "
        "str grad_norm, str norm, float clip_min, float clip_max) -> ()");
}

namespace robustkit::sign_momentum_step {
namespace {

template <typename T>
struct SampleArgs {
  T* x;
  const T* x_orig;
  const T* grad;
  T* momentum;  // nullptr: no momentum buffer, g = normalised grad
  int64_t n;
  T step, eps, decay, clip_min, clip_max;
  GradNorm grad_norm;
  Norm norm;
};

template <typename T>
T abs_sum(const T* v, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += std::abs(v[i]);
  return s;
}

// Writes the new momentum (when there is a buffer) and returns sum g^2 when asked (for the L2 step), summed
// in double (SquareSum) so that large float32 gradients cannot overflow it.
template <typename T>
SquareSum update_momentum(const SampleArgs<T>& a, T inv_gnorm) {
  SquareSum sq = 0;
  if (a.momentum == nullptr) {
    if (a.norm == Norm::kL2) {
#pragma omp simd reduction(+ : sq)
      for (int64_t i = 0; i < a.n; ++i) sq += SquareSum(a.grad[i]) * SquareSum(a.grad[i]);
      sq *= SquareSum(inv_gnorm) * SquareSum(inv_gnorm);
    }
    return sq;
  }
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < a.n; ++i) {
    const T g = momentum_update(a.momentum[i], a.grad[i], a.decay, inv_gnorm);
    a.momentum[i] = g;
    sq += SquareSum(g) * SquareSum(g);
  }
  return sq;
}

template <typename T>
RK_CPU_HOT void step_sample(const SampleArgs<T>& a) {
  const T inv_gnorm = a.grad_norm == GradNorm::kL1 ? inverse_norm(abs_sum(a.grad, a.n)) : T(1);
  if (a.norm == Norm::kLinf) {
    if (a.momentum != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < a.n; ++i) {
        const T g = momentum_update(a.momentum[i], a.grad[i], a.decay, inv_gnorm);
        a.momentum[i] = g;
        a.x[i] = linf_step(a.x[i], a.x_orig[i], g, a.step, a.eps, a.clip_min, a.clip_max);
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < a.n; ++i)
        a.x[i] = linf_step(a.x[i], a.x_orig[i], a.grad[i], a.step, a.eps, a.clip_min, a.clip_max);
    }
    return;
  }
  // L2: g is the momentum buffer when there is one, else the normalised gradient.
  const SquareSum g_norm = std::sqrt(update_momentum(a, inv_gnorm));
  const T g_scale = a.momentum != nullptr ? T(1) : inv_gnorm;
  const T* g = a.momentum != nullptr ? a.momentum : a.grad;
  const T step_over_gnorm = T(SquareSum(a.step) * SquareSum(g_scale) * inverse_norm(g_norm));
  SquareSum delta_sq = 0;
#pragma omp simd reduction(+ : delta_sq)
  for (int64_t i = 0; i < a.n; ++i) {
    const T moved = l2_move(a.x[i], g[i], step_over_gnorm);
    a.x[i] = moved;
    const SquareSum d = SquareSum(moved - a.x_orig[i]);
    delta_sq += d * d;
  }
  const T factor = T(l2_factor(std::sqrt(delta_sq), SquareSum(a.eps)));
#pragma omp simd
  for (int64_t i = 0; i < a.n; ++i) a.x[i] = l2_project(a.x[i], a.x_orig[i], factor, a.clip_min, a.clip_max);
}

void run_dense(at::Tensor& x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
               c10::optional<at::Tensor>& momentum, const c10::optional<at::Tensor>& step_t,
               const c10::optional<at::Tensor>& eps_t, double step_size, double eps, double decay,
               GradNorm grad_norm, Norm norm, double clip_min, double clip_max) {
  const int64_t B = x_adv.size(0);
  const int64_t n = B == 0 ? 0 : x_adv.numel() / B;
  if (x_adv.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x_adv.scalar_type(), "sign_momentum_step", [&] {
    using T = scalar_t;
    const at::Tensor step_c = step_t.has_value() ? step_t->contiguous() : at::Tensor();
    const at::Tensor eps_c = eps_t.has_value() ? eps_t->contiguous() : at::Tensor();
    const T* step_p = step_c.defined() ? step_c.data_ptr<T>() : nullptr;
    const T* eps_p = eps_c.defined() ? eps_c.data_ptr<T>() : nullptr;
    T* x = x_adv.data_ptr<T>();
    const T* xo = x_orig.data_ptr<T>();
    const T* gr = grad.data_ptr<T>();
    T* mom = momentum.has_value() ? momentum->data_ptr<T>() : nullptr;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t off = b * n;
        SampleArgs<T> a{x + off, xo + off, gr + off, mom ? mom + off : nullptr, n,
                        step_p ? step_p[b] : T(step_size), eps_p ? eps_p[b] : T(eps), T(decay),
                        T(clip_min), T(clip_max), grad_norm, norm};
        step_sample(a);
      }
    });
  });
}

void sign_momentum_step_cpu(at::Tensor x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
                            c10::optional<at::Tensor> momentum, const c10::optional<at::Tensor>& step_t,
                            const c10::optional<at::Tensor>& eps_t, double step_size, double eps, double decay,
                            c10::string_view grad_norm_s, c10::string_view norm_s, double clip_min,
                            double clip_max) {
  check_args(x_adv, x_orig, grad, momentum, step_t, eps_t, step_size, eps, clip_min, clip_max);
  const GradNorm grad_norm = parse_grad_norm(std::string(grad_norm_s));
  const Norm norm = parse_norm(kOp, norm_s);
  with_dense_sample_layout(x_adv, x_orig, grad, momentum,
                           [&](at::Tensor& x, const at::Tensor& x0, const at::Tensor& g, c10::optional<at::Tensor>& m) {
                             run_dense(x, x0, g, m, step_t, eps_t, step_size, eps, decay, grad_norm, norm, clip_min,
                                       clip_max);
                           });
}

}  // namespace
}  // namespace robustkit::sign_momentum_step

TORCH_LIBRARY_IMPL(robustkit, CPU, m) {
  m.impl("sign_momentum_step_", &robustkit::sign_momentum_step::sign_momentum_step_cpu);
}
