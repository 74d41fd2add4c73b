// Argument checks shared by the CPU and CUDA glue of robustkit::ensemble_temperature_ce.
#pragma once

#include <ATen/ATen.h>

#include <cfloat>
#include <cmath>

#include "common/checks.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h"

namespace robustkit::ensemble_temperature_ce {

// Row statistics are kept in the accumulation type: float32 for float32/float16/bfloat16 logits.
constexpr double kMinFloatTemperature = 1e-30;
constexpr double kMaxFloatTemperature = 1e30;

inline at::ScalarType row_stats_dtype(at::ScalarType logits_dtype) {
  return logits_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_forward_args(const at::Tensor& logits, const at::Tensor& target, double temperature) {
  constexpr const char* op = "ensemble_temperature_ce";
  RK_CHECK_DIM(logits, 3, op, "logits", "[K, B, C]");
  RK_CHECK_FLOATING(logits, op, "logits");
  RK_CHECK_DIM(target, 1, op, "target", "[B]");
  RK_CHECK_DTYPE(target, at::kLong, op, "target");
  RK_CHECK(target.size(0) == logits.size(1), op, "target must be [B] with B = logits.size(1) = ",
           logits.size(1), ", got shape ", target.sizes());
  RK_CHECK(logits.size(0) >= 1, op, "logits must hold at least one model (K >= 1), got shape ", logits.sizes());
  RK_CHECK(logits.size(2) >= 1, op, "logits must hold at least one class (C >= 1), got shape ", logits.sizes());
  RK_CHECK_SAME_DEVICE(logits, target, op, "logits", "target");
  RK_CHECK(temperature > 0 && std::isfinite(temperature), op, "temperature must be a finite number > 0, got ",
           temperature);
  // The kernels scale by 1 / T in the accumulation type. In float32 (also for float16/bfloat16 logits) 1 / T
  // overflows below T ~ 2.9e-39 and underflows towards 0 above T ~ 1e38, which turns the loss and gradient
  // into NaN; [1e-30, 1e30] keeps 1 / T and soft_weight / T normal floats with room for the logits' scale.
  if (logits.scalar_type() != at::kDouble) {
    RK_CHECK(temperature >= kMinFloatTemperature && temperature <= kMaxFloatTemperature, op,
             "temperature must be in [", kMinFloatTemperature, ", ", kMaxFloatTemperature, "] for ",
             dtype_name(logits.scalar_type()), " logits (1 / temperature must be a normal float32), got ",
             temperature, "; use float64 logits for a wider range");
  } else {
    RK_CHECK(std::isfinite(1.0 / temperature), op, "temperature must be >= ", 1.0 / DBL_MAX,
             " (1 / temperature must be finite in float64), got ", temperature);
  }
}

// Every target indexes a logit row: [0, C) on every device (checked on the host).
inline void check_targets(const at::Tensor& target, int64_t num_classes, const char* op) {
  check_index_range(target, num_classes, op, "target");
}

inline void check_backward_args(const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
                                const at::Tensor& stats, double temperature) {
  constexpr const char* op = "_ensemble_temperature_ce_backward";
  check_forward_args(logits, target, temperature);
  RK_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == logits.size(1), op,
           "grad_loss must be [B] with B = ", logits.size(1), ", got shape ", grad_loss.sizes());
  RK_CHECK(grad_loss.scalar_type() == logits.scalar_type(), op, "grad_loss must have the logits' dtype ",
           dtype_name(logits.scalar_type()), ", got ", dtype_name(grad_loss.scalar_type()));
  RK_CHECK(stats.dim() == 3 && stats.size(0) == kNumRowStats && stats.size(1) == logits.size(0) &&
               stats.size(2) == logits.size(1),
           op, "row_stats must be [", kNumRowStats, ", K, B] = [", kNumRowStats, ", ", logits.size(0), ", ",
           logits.size(1), "], got shape ", stats.sizes());
  RK_CHECK(stats.scalar_type() == row_stats_dtype(logits.scalar_type()), op, "row_stats must be ",
           dtype_name(row_stats_dtype(logits.scalar_type())), ", got ", dtype_name(stats.scalar_type()));
  RK_CHECK_SAME_DEVICE(logits, grad_loss, op, "logits", "grad_loss");
  RK_CHECK_SAME_DEVICE(logits, stats, op, "logits", "row_stats");
}

}  // namespace robustkit::ensemble_temperature_ce
