// Torch-free CPU row loops of the ensemble temperature cross-entropy (see ensemble_ce_cpu_kernel.h).
// `#pragma omp simd` lets gcc vectorize the float reductions (it may reassociate them).
#include "ops/ensemble_ce/ensemble_ce_cpu_kernel.h"

#include <limits>

#include "common/cpu_vectorize.h"
#include "ops/ensemble_ce/ensemble_ce_math.h"

namespace robustkit {
namespace ensemble_ce {
namespace {

template <typename T>
RK_CPU_HOT T row_max_impl(const T* row, int64_t num_classes) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < num_classes; ++j) m = row[j] > m ? row[j] : m;
  return m;
}

template <typename T>
RK_CPU_HOT void row_sums_impl(const T* row, int64_t num_classes, T m, T inv_t, T& sum_t, T& sum_1) {
  T st = 0, s1 = 0;
#pragma omp simd reduction(+ : st, s1)
  for (int64_t j = 0; j < num_classes; ++j) {
    st += exp_at_temperature<T>(row[j], m, inv_t);
    s1 += exp_at_one<T>(row[j], m);
  }
  sum_t = st;
  sum_1 = s1;
}

template <typename T>
RK_CPU_HOT void backward_row_impl(const T* row, T* grad_row, int64_t num_classes, int64_t target, T m, T inv_t,
                                  T log_t, T log_1, T gs, T gh) {
#pragma omp simd
  for (int64_t j = 0; j < num_classes; ++j) {
    grad_row[j] = grad_without_onehot<T>(row[j], m, inv_t, log_t, log_1, gs, gh);
  }
  grad_row[target] -= onehot_coef<T>(gs, gh);
}

}  // namespace

float row_max(const float* row, int64_t c) { return row_max_impl(row, c); }
double row_max(const double* row, int64_t c) { return row_max_impl(row, c); }

void row_sums(const float* row, int64_t c, float m, float inv_t, float& st, float& s1) {
  row_sums_impl(row, c, m, inv_t, st, s1);
}
void row_sums(const double* row, int64_t c, double m, double inv_t, double& st, double& s1) {
  row_sums_impl(row, c, m, inv_t, st, s1);
}

void backward_row(const float* row, float* g, int64_t c, int64_t t, float m, float inv_t, float lt, float l1,
                  float gs, float gh) {
  backward_row_impl(row, g, c, t, m, inv_t, lt, l1, gs, gh);
}
void backward_row(const double* row, double* g, int64_t c, int64_t t, double m, double inv_t, double lt, double l1,
                  double gs, double gh) {
  backward_row_impl(row, g, c, t, m, inv_t, lt, l1, gs, gh);
}

}  // namespace ensemble_ce
}  // namespace robustkit
