// Argument checks and layout handling shared by the CPU and CUDA glue of robustkit::sign_momentum_step_.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <string>

#include "common/checks.h"
#include "ops/sign_momentum_step/sign_momentum_step_math.h"

namespace robustkit::sign_momentum_step {

constexpr const char* kOp = "sign_momentum_step";

inline GradNorm parse_grad_norm(const std::string& s) {
  if (s == "l1") return GradNorm::kL1;
  if (s == "none") return GradNorm::kNone;
  TORCH_CHECK(false, kOp, ": grad_norm must be \"l1\" or \"none\", got \"", s, "\"");
}


inline void check_per_sample(const c10::optional<at::Tensor>& t, const at::Tensor& x, const char* name) {
  if (!t.has_value()) return;
  RK_CHECK(t->dim() == 1 && t->size(0) == x.size(0), kOp, name, " must be a float or a [B] tensor with B = ",
           x.size(0), ", got shape ", t->sizes());
  RK_CHECK(t->scalar_type() == x.scalar_type(), kOp, name, " must have x_adv's dtype ",
           dtype_name(x.scalar_type()), ", got ", dtype_name(t->scalar_type()));
  RK_CHECK(t->device() == x.device(), kOp, name, " must be on x_adv's device ", x.device(), ", got ", t->device());
}

// The per-sample values, checked on the host on every device (a [B] copy from a GPU): a NaN step_size would
// turn the sample into NaN, a negative or NaN eps would make the ball empty.
inline void check_per_sample_values(const c10::optional<at::Tensor>& t, const char* name, bool non_negative) {
  if (!t.has_value() || t->numel() == 0) return;
  const at::Tensor host = t->to(at::kCPU, at::kDouble).contiguous();
  const double* p = host.data_ptr<double>();
  for (int64_t b = 0; b < host.numel(); ++b) {
    if (non_negative) {
      RK_CHECK(p[b] >= 0, kOp, name, "[", b, "] must be >= 0, got ", p[b]);
    } else {
      RK_CHECK(std::isfinite(p[b]), kOp, name, "[", b, "] must be finite, got ", p[b]);
    }
  }
}

inline void check_args(const at::Tensor& x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
                       const c10::optional<at::Tensor>& momentum, const c10::optional<at::Tensor>& step_t,
                       const c10::optional<at::Tensor>& eps_t, double step_size, double eps, double clip_min,
                       double clip_max) {
  RK_CHECK(x_adv.dim() >= 1, kOp, "x_adv must be a [B, ...] tensor, got a 0-D tensor");
  RK_CHECK(x_adv.scalar_type() == at::kFloat || x_adv.scalar_type() == at::kDouble, kOp,
           "x_adv must be float32 or float64 (the perturbation state stays in full precision), got ",
           dtype_name(x_adv.scalar_type()));
  RK_CHECK_SAME_SHAPE(x_orig, x_adv, kOp, "x_orig", "x_adv");
  RK_CHECK_SAME_SHAPE(grad, x_adv, kOp, "grad", "x_adv");
  RK_CHECK_DTYPE(x_orig, x_adv.scalar_type(), kOp, "x_orig");
  RK_CHECK_DTYPE(grad, x_adv.scalar_type(), kOp, "grad");
  RK_CHECK_SAME_DEVICE(x_orig, x_adv, kOp, "x_orig", "x_adv");
  RK_CHECK_SAME_DEVICE(grad, x_adv, kOp, "grad", "x_adv");
  if (momentum.has_value()) {
    RK_CHECK_SAME_SHAPE((*momentum), x_adv, kOp, "momentum", "x_adv");
    RK_CHECK_DTYPE((*momentum), x_adv.scalar_type(), kOp, "momentum");
    RK_CHECK_SAME_DEVICE((*momentum), x_adv, kOp, "momentum", "x_adv");
  }
  check_per_sample(step_t, x_adv, "step_size");
  check_per_sample(eps_t, x_adv, "eps");
  check_per_sample_values(step_t, "step_size", /*non_negative=*/false);
  check_per_sample_values(eps_t, "eps", /*non_negative=*/true);
  const at::Tensor m = momentum.has_value() ? *momentum : at::Tensor();
  check_no_overlap(kOp, {{"x_adv", &x_adv}, {"momentum", &m}}, {{"x_orig", &x_orig}, {"grad", &grad}});
  RK_CHECK(std::isfinite(step_size), kOp, "step_size must be finite, got ", step_size);
  RK_CHECK(eps >= 0, kOp, "eps must be >= 0, got ", eps);
  RK_CHECK(clip_min <= clip_max, kOp, "clip must be (min, max) with min <= max, got (", clip_min, ", ", clip_max,
           ")");
}

// The kernels walk each sample's elements as one flat block, which needs every tensor to store sample b in
// the same dense block [b * n, (b + 1) * n) in the same element order. Contiguous and channels_last
// tensors with identical strides qualify; anything else runs on contiguous copies that are written back.
inline bool shares_dense_sample_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.strides() == b.strides() && a.is_non_overlapping_and_dense() &&
         (a.size(0) <= 1 || a.stride(0) == a.numel() / a.size(0));
}

// Runs `run_dense(x_adv, x_orig, grad, momentum)` on tensors that share a dense per-sample layout: the
// inputs themselves when they already do, else contiguous copies whose results are written back into
// x_adv and momentum (so the op stays in place for every layout).
template <typename RunDense>
void with_dense_sample_layout(at::Tensor& x_adv, const at::Tensor& x_orig, const at::Tensor& grad,
                              c10::optional<at::Tensor>& momentum, RunDense&& run_dense) {
  const bool dense = shares_dense_sample_layout(x_adv, x_orig) && shares_dense_sample_layout(x_adv, grad) &&
                     (!momentum.has_value() || shares_dense_sample_layout(x_adv, *momentum));
  if (dense) {
    run_dense(x_adv, x_orig, grad, momentum);
    return;
  }
  at::Tensor x_c = x_adv.contiguous();
  c10::optional<at::Tensor> m_c;
  if (momentum.has_value()) m_c = momentum->contiguous();
  run_dense(x_c, x_orig.contiguous(), grad.contiguous(), m_c);
  if (!x_c.is_same(x_adv)) x_adv.copy_(x_c);
  if (momentum.has_value() && !m_c->is_same(*momentum)) momentum->copy_(*m_c);
}

}  // namespace robustkit::sign_momentum_step
