// Torch-free CPU row loops of the ensemble temperature cross-entropy (see ensemble_temperature_ce_cpu_kernel.h).
// `#pragma omp simd` lets gcc vectorize the float reductions (it may reassociate them).
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_cpu_kernel.h"

#include <limits>

#include "common/cpu_vectorize.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h"

namespace robustkit::ensemble_temperature_ce {
namespace {

template <typename T>
RK_CPU_HOT T row_max_impl(const T* row, int64_t num_classes) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < num_classes; ++j) m = row[j] > m ? row[j] : m;
  return m;
}

// At T = 1 both exponentials are the same: one per element (plain cross-entropy, PGD, MI-FGSM).
template <typename T>
RK_CPU_HOT void row_sums_at_one(const T* row, int64_t num_classes, int64_t target, T m, T sums[4]) {
  T s = 0, o = 0;
#pragma omp simd reduction(+ : s, o)
  for (int64_t j = 0; j < num_classes; ++j) {
    const T e = exp_at_one<T>(row[j], m);
    s += e;
    o += j != target ? e : T(0);
  }
  sums[0] = sums[1] = s;
  sums[2] = sums[3] = o;
}

template <typename T>
RK_CPU_HOT void row_sums_impl(const T* row, int64_t num_classes, int64_t target, T m, T inv_t, T sums[4]) {
  if (inv_t == T(1)) return row_sums_at_one(row, num_classes, target, m, sums);
  T st = 0, s1 = 0, ot = 0, o1 = 0;
#pragma omp simd reduction(+ : st, s1, ot, o1)
  for (int64_t j = 0; j < num_classes; ++j) {
    const T et = exp_at_temperature<T>(row[j], m, inv_t), e1 = exp_at_one<T>(row[j], m);
    const bool other = j != target;
    st += et;
    s1 += e1;
    ot += other ? et : T(0);
    o1 += other ? e1 : T(0);
  }
  sums[0] = st;
  sums[1] = s1;
  sums[2] = ot;
  sums[3] = o1;
}

template <typename T>
RK_CPU_HOT void backward_row_impl(const T* row, T* grad_row, int64_t num_classes, int64_t target, const T* stats,
                                  T inv_t, T gs, T gh) {
  const T m = stats[kStatMax], log_t = stats[kStatLogSumT], log_1 = stats[kStatLogSum1];
  if (inv_t == T(1)) {  // both softmaxes are the same: one exponential per element
    const T coef = gs + gh;
#pragma omp simd
    for (int64_t j = 0; j < num_classes; ++j) grad_row[j] = coef * exp_acc((row[j] - m) - log_1);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < num_classes; ++j) {
      grad_row[j] = grad_without_onehot<T>(row[j], m, inv_t, log_t, log_1, gs, gh);
    }
  }
  grad_row[target] = target_grad<T>(log_t, log_1, stats[kStatLogOthersT], stats[kStatLogOthers1], gs, gh);
}

}  // namespace

float row_max(const float* row, int64_t c) { return row_max_impl(row, c); }
double row_max(const double* row, int64_t c) { return row_max_impl(row, c); }

void row_sums(const float* row, int64_t c, int64_t t, float m, float inv_t, float sums[4]) {
  row_sums_impl(row, c, t, m, inv_t, sums);
}
void row_sums(const double* row, int64_t c, int64_t t, double m, double inv_t, double sums[4]) {
  row_sums_impl(row, c, t, m, inv_t, sums);
}

void backward_row(const float* row, float* g, int64_t c, int64_t t, const float stats[5], float inv_t, float gs,
                  float gh) {
  backward_row_impl(row, g, c, t, stats, inv_t, gs, gh);
}
void backward_row(const double* row, double* g, int64_t c, int64_t t, const double stats[5], double inv_t,
                  double gs, double gh) {
  backward_row_impl(row, g, c, t, stats, inv_t, gs, gh);
}

}  // namespace robustkit::ensemble_temperature_ce
