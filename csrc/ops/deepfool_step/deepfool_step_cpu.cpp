// CPU kernels of robustkit::deepfool_step and its backward: one task per sample. The forward reads each
// candidate's gradient once for its norm and the chosen one once more for the step; the backward reads the
// chosen gradient twice (the reduction <g, direction>, then the gradient row) and leaves the other rows zero.
// The loops stay beside torch's headers: the torch-free *_cpu_kernel.cpp split of ensemble_temperature_ce and
// cw_l2_step is for loops gcc was measured to stop vectorizing here; these were not measured to, so they are
// not split (measure, e.g. with -fopt-info-vec, before moving them).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common/cpu_vectorize.h"
#include "common/parallel.h"
#include "ops/deepfool_step/deepfool_step.h"
#include "ops/deepfool_step/deepfool_step_math.h"

// The op's schema, beside its kernels (in the CPU file, which every build compiles).
TORCH_LIBRARY_FRAGMENT(robustkit, m) {
  // DeepFool linearisation step: (step [B, D], chosen candidate [B]); see robustkit/ops/deepfool_step.py.
  m.def("deepfool_step(Tensor f, Tensor w, str norm) -> (Tensor, Tensor)");
  m.def("_deepfool_step_backward(Tensor grad_step, Tensor f, Tensor w, Tensor index, str norm) -> (Tensor, Tensor)");
}

namespace robustkit::deepfool_step {
namespace {

template <typename T>
RK_CPU_HOT T norm_sum(const T* w, int64_t n, Norm norm) {
  T s = 0;
  if (norm == Norm::kL2) {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += w[i] * w[i];
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += std::abs(w[i]);
  }
  return s;
}

// Index of the nearest linearised boundary (the rule is nearer(), deepfool_step_math.h); 0 when every
// distance is NaN.
template <typename T>
int64_t nearest_candidate(const T* f, const T* w, int64_t K, int64_t D, Norm norm, T* chosen_norm_sum) {
  int64_t best = 0;
  T best_dist = T(0), best_sum = T(0);
  for (int64_t k = 0; k < K; ++k) {
    const T sum = norm_sum(w + k * D, D, norm);
    const T dist = boundary_distance(f[k], sum, norm);
    if (k == 0 || nearer(dist, best_dist)) {
      best = k;
      best_dist = dist;
      best_sum = sum;
    }
  }
  *chosen_norm_sum = best_sum;
  return best;
}

// One sample: writes the step r [D] and returns the chosen candidate.
template <typename T>
RK_CPU_HOT int64_t step_sample(const T* f, const T* w, T* r, int64_t K, int64_t D, Norm norm) {
  T sum;
  const int64_t l = nearest_candidate(f, w, K, D, norm, &sum);
  const T scale = step_scale(f[l], sum, norm);
  const T* wl = w + l * D;
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) r[i] = scale * step_direction(wl[i], norm);
  return l;
}

// One sample: writes grad_f[l] and the row grad_w[l] (the caller zeroed the rest).
template <typename T>
RK_CPU_HOT void backward_sample(const T* g, const T* f, const T* w, int64_t l, T* grad_f, T* grad_w, int64_t D,
                                Norm norm) {
  const T* wl = w + l * D;
  T sum = 0, g_dot = 0;
#pragma omp simd reduction(+ : sum, g_dot)
  for (int64_t i = 0; i < D; ++i) {
    sum += norm_term(wl[i], norm);
    g_dot += g[i] * step_direction(wl[i], norm);
  }
  const T scale = step_scale(f[l], sum, norm);
  grad_f[l] = grad_f_value(f[l], sum, g_dot, norm);
  const T coef = grad_w_norm_coef(scale, sum, g_dot, norm);
  T* out = grad_w + l * D;
#pragma omp simd
  for (int64_t i = 0; i < D; ++i) out[i] = grad_w_value(g[i], wl[i], scale, coef, norm);
}

std::tuple<at::Tensor, at::Tensor> deepfool_step_cpu(const at::Tensor& f_in, const at::Tensor& w_in,
                                                      c10::string_view norm_s) {
  check_forward_args(f_in, w_in);
  const Norm norm = parse_norm(kOp, norm_s);
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor step = at::empty({B, D}, w.options());
  at::Tensor index = at::zeros({B}, w.options().dtype(at::kLong));
  if (B == 0) return {step, index};
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "deepfool_step", [&] {
    const scalar_t* fp = f.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* rp = step.data_ptr<scalar_t>();
    int64_t* ip = index.data_ptr<int64_t>();
    at::parallel_for(0, B, items_per_task(K * std::max<int64_t>(D, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) ip[b] = step_sample(fp + b * K, wp + b * K * D, rp + b * D, K, D, norm);
    });
  });
  return {step, index};
}

std::tuple<at::Tensor, at::Tensor> deepfool_step_backward_cpu(const at::Tensor& grad_in, const at::Tensor& f_in,
                                                               const at::Tensor& w_in, const at::Tensor& index_in,
                                                               c10::string_view norm_s) {
  check_backward_args(grad_in, f_in, w_in, index_in);
  const Norm norm = parse_norm(kOp, norm_s);
  const at::Tensor g = grad_in.contiguous(), f = f_in.contiguous(), w = w_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor grad_f = at::zeros({B, K}, f.options());
  at::Tensor grad_w = at::zeros({B, K, D}, w.options());
  if (B == 0 || D == 0) return {grad_f, grad_w};
  const int64_t* ip = index.data_ptr<int64_t>();  // in [0, K): check_backward_args
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "_deepfool_step_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* fp = f.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* gfp = grad_f.data_ptr<scalar_t>();
    scalar_t* gwp = grad_w.data_ptr<scalar_t>();
    at::parallel_for(0, B, items_per_task(K * std::max<int64_t>(D, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        backward_sample(gp + b * D, fp + b * K, wp + b * K * D, ip[b], gfp + b * K, gwp + b * K * D, D, norm);
      }
    });
  });
  return {grad_f, grad_w};
}

}  // namespace
}  // namespace robustkit::deepfool_step

TORCH_LIBRARY_IMPL(robustkit, CPU, m) {
  m.impl("deepfool_step", &robustkit::deepfool_step::deepfool_step_cpu);
  m.impl("_deepfool_step_backward", &robustkit::deepfool_step::deepfool_step_backward_cpu);
}
