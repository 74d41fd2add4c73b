// Torch-free CPU loop of robustkit::cw_l2_step_ (see cw_l2_step_cpu_kernel.h): two passes over a sample,
// ||x - x_orig||^2 (which decides whether x becomes the best-so-far), then the copy into best_adv where it
// does, the gradient, the Adam update and the new x.
#include "ops/cw_l2_step/cw_l2_step_cpu_kernel.h"

#include <algorithm>

#include "common/cpu_vectorize.h"
#include "ops/cw_l2_step/cw_l2_step_math.h"

namespace robustkit::cw_l2_step {
namespace {

// The buffers never alias (they are distinct tensors of the op); __restrict__ lets gcc vectorize.
template <typename T>
RK_CPU_HOT T step_sample_impl(T* __restrict__ w, T* __restrict__ x, T* __restrict__ m, T* __restrict__ v,
                              T* __restrict__ best_adv, T* best_l2sq, const T* __restrict__ x_orig,
                              const T* __restrict__ loss_grad, bool success, int64_t n, const CwCoefs<T>& c) {
  T sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) {
    const T d = x[i] - x_orig[i];
    sq += d * d;
  }
  if (improves(success, sq, *best_l2sq)) {
    *best_l2sq = sq;
    std::copy(x, x + n, best_adv);
  }
  const T lo = c.lo, hi = c.hi, lr = c.lr, beta1 = c.beta1, beta2 = c.beta2, adam_eps = c.adam_eps;
  const T one_minus_beta1 = c.one_minus_beta1, one_minus_beta2 = c.one_minus_beta2;
  const T inv_bc1 = c.inv_bc1, inv_sqrt_bc2 = c.inv_sqrt_bc2;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    T wi = w[i], mi = m[i], vi = v[i];
    x[i] = adam_update(wi, mi, vi, x[i], x_orig[i], loss_grad[i], lo, hi, lr, beta1, beta2, one_minus_beta1,
                       one_minus_beta2, adam_eps, inv_bc1, inv_sqrt_bc2);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
  }
  return sq;
}

}  // namespace

float step_sample(float* w, float* x, float* m, float* v, float* best_adv, float* best_l2sq, const float* x_orig,
                  const float* loss_grad, bool success, int64_t n, const CwCoefs<float>& c) {
  return step_sample_impl(w, x, m, v, best_adv, best_l2sq, x_orig, loss_grad, success, n, c);
}

double step_sample(double* w, double* x, double* m, double* v, double* best_adv, double* best_l2sq,
                   const double* x_orig, const double* loss_grad, bool success, int64_t n,
                   const CwCoefs<double>& c) {
  return step_sample_impl(w, x, m, v, best_adv, best_l2sq, x_orig, loss_grad, success, n, c);
}

}  // namespace robustkit::cw_l2_step
