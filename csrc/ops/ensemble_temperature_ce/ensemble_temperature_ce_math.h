// Per-row math of the ensemble temperature cross-entropy (self-distillation attack, Eq. 8):
//   loss_b = soft_weight * sum_k CE(z_kb / T, y_b) + hard_weight * sum_k CE(z_kb, y_b)
//
// A row is one model's logits for one sample, z[0..C). With the row max m, every exponential is taken of
// (z_j - m) / T <= 0, so |z| up to 1e4 with T down to 1e-2 cannot overflow, and
//   CE(z / T, y) = (m - z_y) / T + log sum_j exp((z_j - m) / T).
// The forward keeps, per row, the shift m, the two log-sums (at T and at 1) and the two log-sums over the
// classes other than y: "row stats". The backward needs only those to form both softmaxes in one pass.
// The sums over j != y give 1 - p_y = sum_{j != y} p_j without the cancellation of 1 - p_y when the model
// is confident (p_y - 1 rounded from p_y loses most digits and flips signs of small input gradients).
#pragma once

#include "common/fast_math.h"
#include "common/host_device.h"

namespace robustkit::ensemble_temperature_ce {

// Index of each row statistic in the [kNumRowStats, K, B] row-stats tensor.
constexpr int kStatMax = 0;
constexpr int kStatLogSumT = 1;
constexpr int kStatLogSum1 = 2;
constexpr int kStatLogOthersT = 3;
constexpr int kStatLogOthers1 = 4;
constexpr int kNumRowStats = 5;

// -log p_y from the stats. With a = log(sum_{j != y} e_j / e_y): CE = log1p(exp(a)), accurate when p_y is
// near 1, and margin + log_sum otherwise (no overflow for large margins).
template <typename acc_t>
HOST_DEVICE acc_t ce_from_stats(acc_t scaled_margin, acc_t log_sum, acc_t log_others) {
  const acc_t a = log_others + scaled_margin;
  return a > acc_t(0) ? scaled_margin + log_sum : log1p_acc(exp_acc(a));
}

template <typename acc_t>
HOST_DEVICE acc_t row_loss(acc_t row_max, acc_t z_target, acc_t inv_temperature, acc_t log_sum_t,
                           acc_t log_sum_1, acc_t log_others_t, acc_t log_others_1, acc_t soft_weight,
                           acc_t hard_weight) {
  const acc_t margin = row_max - z_target;  // >= 0
  return soft_weight * ce_from_stats(margin * inv_temperature, log_sum_t, log_others_t) +
         hard_weight * ce_from_stats(margin, log_sum_1, log_others_1);
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
// At j = y the caller writes target_grad instead, so that this loop stays branch-free.
template <typename acc_t>
HOST_DEVICE acc_t grad_without_onehot(acc_t z, acc_t row_max, acc_t inv_temperature, acc_t log_sum_t,
                                      acc_t log_sum_1, acc_t soft_coef, acc_t hard_weight) {
  const acc_t shifted = z - row_max;
  return soft_coef * exp_acc(shifted * inv_temperature - log_sum_t) +
         hard_weight * exp_acc(shifted - log_sum_1);
}

// d loss_row / d z_y = soft_weight / T (p_y(T) - 1) + hard_weight (p_y(1) - 1), with p_y - 1 taken as
// -sum_{j != y} p_j.
template <typename acc_t>
HOST_DEVICE acc_t target_grad(acc_t log_sum_t, acc_t log_sum_1, acc_t log_others_t, acc_t log_others_1,
                              acc_t soft_coef, acc_t hard_weight) {
  return -(soft_coef * exp_acc(log_others_t - log_sum_t) + hard_weight * exp_acc(log_others_1 - log_sum_1));
}

}  // namespace robustkit::ensemble_temperature_ce
