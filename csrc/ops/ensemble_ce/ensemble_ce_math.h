// Per-row math of the ensemble temperature cross-entropy (self-distillation attack, Eq. 8):
//   loss_b = soft_weight * sum_k CE(z_kb / T, y_b) + hard_weight * sum_k CE(z_kb, y_b)
//
// A row is one model's logits for one sample, z[0..C). With the row max m, every exponential is taken of
// (z_j - m) / T <= 0, so |z| up to 1e4 with T down to 1e-2 cannot overflow, and
//   CE(z / T, y) = (m - z_y) / T + log sum_j exp((z_j - m) / T).
// The forward keeps, per row, the shift m and the two log-sums (at T and at 1): "row stats". The backward
// needs only those to form both softmaxes in one pass over the logits.
#pragma once

#include "common/fast_math.h"
#include "common/host_device.h"

namespace robustkit {
namespace ensemble_ce {

// Index of each row statistic in the [3, K, B] row-stats tensor.
constexpr int kStatMax = 0;
constexpr int kStatLogSumT = 1;
constexpr int kStatLogSum1 = 2;

template <typename acc_t>
HOST_DEVICE acc_t row_loss(acc_t row_max, acc_t z_target, acc_t inv_temperature, acc_t log_sum_t,
                           acc_t log_sum_1, acc_t soft_weight, acc_t hard_weight) {
  const acc_t margin = row_max - z_target;  // >= 0
  return soft_weight * (margin * inv_temperature + log_sum_t) + hard_weight * (margin + log_sum_1);
}

// The two exponentials of one logit that the forward sums: exp((z - m) / T) and exp(z - m).
// (Two functions rather than one with out-parameters: out-parameters stop gcc from vectorizing the loop.)
template <typename acc_t>
HOST_DEVICE acc_t exp_at_temperature(acc_t z, acc_t row_max, acc_t inv_temperature) {
  return exp_acc((z - row_max) * inv_temperature);
}

template <typename acc_t>
HOST_DEVICE acc_t exp_at_one(acc_t z, acc_t row_max) {
  return exp_acc(z - row_max);
}

// d loss_row / d z_j without the one-hot part:
//   soft_weight / T * softmax(z / T)_j + hard_weight * softmax(z)_j.
// The one-hot part, -(soft_weight / T + hard_weight) at j = y, is added by the caller at one index so
// that this loop stays branch-free.
template <typename acc_t>
HOST_DEVICE acc_t grad_without_onehot(acc_t z, acc_t row_max, acc_t inv_temperature, acc_t log_sum_t,
                                      acc_t log_sum_1, acc_t soft_coef, acc_t hard_weight) {
  const acc_t shifted = z - row_max;
  return soft_coef * exp_acc(shifted * inv_temperature - log_sum_t) +
         hard_weight * exp_acc(shifted - log_sum_1);
}

template <typename acc_t>
HOST_DEVICE acc_t onehot_coef(acc_t soft_coef, acc_t hard_weight) {
  return soft_coef + hard_weight;
}

}  // namespace ensemble_ce
}  // namespace robustkit
