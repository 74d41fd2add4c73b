// Argument checks shared by the CPU and CUDA glue of robustkit::deepfool_step and its backward.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"
#include "ops/deepfool_step/deepfool_step_math.h"

namespace robustkit::deepfool_step {

constexpr const char* kOp = "deepfool_step";

inline void check_forward_args(const at::Tensor& f, const at::Tensor& w) {
  RK_CHECK_DIM(f, 2, kOp, "f", "[B, K]");
  RK_CHECK_DIM(w, 3, kOp, "w", "[B, K, D]");
  RK_CHECK(f.scalar_type() == at::kFloat || f.scalar_type() == at::kDouble, kOp,
           "f must be float32 or float64, got ", dtype_name(f.scalar_type()));
  RK_CHECK_DTYPE(w, f.scalar_type(), kOp, "w");
  RK_CHECK(w.size(0) == f.size(0) && w.size(1) == f.size(1), kOp, "w must be [B, K, D] with [B, K] = f's shape ",
           f.sizes(), ", got shape ", w.sizes());
  RK_CHECK(f.size(0) == 0 || f.size(1) >= 1, kOp, "f must hold at least one candidate (K >= 1), got shape ",
           f.sizes());
  RK_CHECK_SAME_DEVICE(f, w, kOp, "f", "w");
}

inline void check_backward_args(const at::Tensor& grad_step, const at::Tensor& f, const at::Tensor& w,
                                const at::Tensor& index) {
  constexpr const char* op = "_deepfool_step_backward";
  check_forward_args(f, w);
  RK_CHECK(grad_step.dim() == 2 && grad_step.size(0) == w.size(0) && grad_step.size(1) == w.size(2), op,
           ": grad_step must be [B, D] = [", w.size(0), ", ", w.size(2), "], got shape ", grad_step.sizes());
  RK_CHECK_DTYPE(grad_step, f.scalar_type(), op, "grad_step");
  RK_CHECK(index.dim() == 1 && index.size(0) == f.size(0), op, "index must be [B] with B = ", f.size(0),
           ", got shape ", index.sizes());
  RK_CHECK_DTYPE(index, at::kLong, op, "index");
  RK_CHECK_SAME_DEVICE(grad_step, f, op, "grad_step", "f");
  RK_CHECK_SAME_DEVICE(index, f, op, "index", "f");
  check_index_range(index, f.size(1), op, "index");  // the kernels read w[b, index[b]]
}

}  // namespace robustkit::deepfool_step
