// Torch-free CPU row loops of the ensemble temperature cross-entropy, for float and double rows.
//
// Why a separate, torch-free translation unit: compiled together with torch's headers (C++20, NDEBUG),
// gcc 12 stopped vectorizing these loops (measured: 10x slower forward). Here they see only the
// HOST_DEVICE math, so they vectorize for SSE2 and, through RK_CPU_HOT clones, for AVX2.
#pragma once

#include <cstdint>

namespace robustkit::ensemble_temperature_ce {

float row_max(const float* row, int64_t num_classes);
double row_max(const double* row, int64_t num_classes);

// The sums of a row: [0] sum_j exp((z_j - m) / T), [1] sum_j exp(z_j - m), [2], [3] the same over j != target.
void row_sums(const float* row, int64_t num_classes, int64_t target, float m, float inv_t, float sums[4]);
void row_sums(const double* row, int64_t num_classes, int64_t target, double m, double inv_t, double sums[4]);

// grad_row = gs * (softmax(z/T) - onehot) + gh * (softmax(z) - onehot); `stats` is the row's 5 stats in
// the order of ensemble_temperature_ce_math.h (kStatMax ...).
void backward_row(const float* row, float* grad_row, int64_t num_classes, int64_t target, const float stats[5],
                  float inv_t, float gs, float gh);
void backward_row(const double* row, double* grad_row, int64_t num_classes, int64_t target,
                  const double stats[5], double inv_t, double gs, double gh);

}  // namespace robustkit::ensemble_temperature_ce
