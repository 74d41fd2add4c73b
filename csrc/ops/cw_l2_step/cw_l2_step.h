// Argument checks shared by the CPU and CUDA glue of robustkit::cw_l2_step_.
#pragma once

#include <ATen/ATen.h>

#include <cmath>

#include "common/checks.h"

namespace robustkit::cw_l2_step {

constexpr const char* kOp = "cw_l2_step";

// The state tensors are updated in place by flat per-sample blocks, so they must be contiguous; the read-only
// inputs are made contiguous by the glue instead.
inline void check_state(const at::Tensor& t, const at::Tensor& w, const char* name) {
  RK_CHECK(t.sizes() == w.sizes(), kOp, name, " must have w's shape ", w.sizes(), ", got ", t.sizes());
  RK_CHECK(t.scalar_type() == w.scalar_type(), kOp, name, " must have w's dtype ", dtype_name(w.scalar_type()),
           ", got ", dtype_name(t.scalar_type()));
  RK_CHECK(t.device() == w.device(), kOp, name, " must be on w's device ", w.device(), ", got ", t.device());
  RK_CHECK(t.is_contiguous(), kOp, name, " must be contiguous (it is updated in place)");
}

inline void check_per_sample(const at::Tensor& t, const at::Tensor& w, const char* name, at::ScalarType dtype) {
  RK_CHECK(t.dim() == 1 && t.size(0) == w.size(0), kOp, name, " must be a [B] tensor with B = ", w.size(0),
           ", got shape ", t.sizes());
  RK_CHECK(t.scalar_type() == dtype, kOp, name, " must be ", dtype_name(dtype), ", got ",
           dtype_name(t.scalar_type()));
  RK_CHECK(t.device() == w.device(), kOp, name, " must be on w's device ", w.device(), ", got ", t.device());
}

inline void check_args(const at::Tensor& w, const at::Tensor& x, const at::Tensor& exp_avg,
                       const at::Tensor& exp_avg_sq, const at::Tensor& best_adv, const at::Tensor& best_l2sq,
                       const at::Tensor& x_orig, const at::Tensor& loss_grad, const at::Tensor& success,
                       int64_t step, double lr, double beta1, double beta2, double adam_eps, double clip_min,
                       double clip_max) {
  RK_CHECK(w.dim() >= 1, kOp, "w must be a [B, ...] tensor, got a 0-D tensor");
  RK_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble, kOp, "w must be float32 or float64, got ",
           dtype_name(w.scalar_type()));
  RK_CHECK(w.is_contiguous(), kOp, "w must be contiguous (it is updated in place)");
  check_state(x, w, "x");
  check_state(exp_avg, w, "exp_avg");
  check_state(exp_avg_sq, w, "exp_avg_sq");
  check_state(best_adv, w, "best_adv");
  check_per_sample(best_l2sq, w, "best_l2sq", w.scalar_type());
  RK_CHECK(best_l2sq.is_contiguous(), kOp, "best_l2sq must be contiguous (it is updated in place)");
  RK_CHECK_SAME_SHAPE(x_orig, w, kOp, "x_orig", "w");
  RK_CHECK_SAME_SHAPE(loss_grad, w, kOp, "loss_grad", "w");
  RK_CHECK_DTYPE(x_orig, w.scalar_type(), kOp, "x_orig");
  RK_CHECK_DTYPE(loss_grad, w.scalar_type(), kOp, "loss_grad");
  RK_CHECK_SAME_DEVICE(x_orig, w, kOp, "x_orig", "w");
  RK_CHECK_SAME_DEVICE(loss_grad, w, kOp, "loss_grad", "w");
  check_per_sample(success, w, "success", at::kBool);
  check_no_overlap(kOp,
                   {{"w", &w}, {"x", &x}, {"exp_avg", &exp_avg}, {"exp_avg_sq", &exp_avg_sq}, {"best_adv", &best_adv},
                    {"best_l2sq", &best_l2sq}},
                   {{"x_orig", &x_orig}, {"loss_grad", &loss_grad}, {"success", &success}});
  RK_CHECK(step >= 1, kOp, "step must be >= 1 (Adam's bias correction counts from 1), got ", step);
  RK_CHECK(lr > 0 && std::isfinite(lr), kOp, "lr must be a finite number > 0, got ", lr);
  RK_CHECK(beta1 >= 0 && beta1 < 1, kOp, "beta1 must be in [0, 1), got ", beta1);
  RK_CHECK(beta2 >= 0 && beta2 < 1, kOp, "beta2 must be in [0, 1), got ", beta2);
  RK_CHECK(adam_eps > 0 && std::isfinite(adam_eps), kOp, "adam_eps must be a finite number > 0, got ", adam_eps);
  RK_CHECK(clip_min < clip_max && std::isfinite(clip_min) && std::isfinite(clip_max), kOp,
           "clip must be a finite (min, max) with min < max, got (", clip_min, ", ", clip_max, ")");
}

}  // namespace robustkit::cw_l2_step
