// Torch-free CPU row loops of the ensemble temperature cross-entropy, for float and double rows.
//
// Why a separate, torch-free translation unit: compiled together with torch's headers (C++20, NDEBUG),
// gcc 12 stopped vectorizing these loops (measured: 10x slower forward). Here they see only the
// HOST_DEVICE math, so they vectorize for SSE2 and, through RK_CPU_HOT clones, for AVX2.
#pragma once

#include <cstdint>

namespace robustkit {
namespace ensemble_ce {

float row_max(const float* row, int64_t num_classes);
double row_max(const double* row, int64_t num_classes);

// sum_j exp((z_j - m) / T) and sum_j exp(z_j - m).
void row_sums(const float* row, int64_t num_classes, float m, float inv_t, float& sum_t, float& sum_1);
void row_sums(const double* row, int64_t num_classes, double m, double inv_t, double& sum_t, double& sum_1);

// grad_row = gs * softmax(z/T) + gh * softmax(z), minus (gs + gh) at the target index.
void backward_row(const float* row, float* grad_row, int64_t num_classes, int64_t target, float m, float inv_t,
                  float log_t, float log_1, float gs, float gh);
void backward_row(const double* row, double* grad_row, int64_t num_classes, int64_t target, double m,
                  double inv_t, double log_t, double log_1, double gs, double gh);

}  // namespace ensemble_ce
}  // namespace robustkit
