// CPU glue of robustkit::ensemble_temperature_ce and its backward. The row loops live in the torch-free
// ensemble_temperature_ce_cpu_kernel.cpp; float16/bfloat16 rows are widened to float32 in a per-task buffer first.
// Forward: one task per sample b, looping over the K models' rows; backward: one task per row (k, b).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_cpu_kernel.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h"

// The op's schema lives beside its kernels. (It is in the CPU file, which every build compiles, rather than in
// a file of its own: each translation unit that includes torch's headers costs about a minute to compile.)
TORCH_LIBRARY_FRAGMENT(robustkit, m) {
  // Per-sample loss [B] and the row stats [5, K, B] the backward needs (max; log-sums at T and at 1, over all
  // classes and over the classes other than the target; see ensemble_temperature_ce_math.h).
  m.def("ensemble_temperature_ce(Tensor logits, Tensor target, float temperature, float soft_weight, "
        "float hard_weight) -> (Tensor, Tensor)");
  m.def("_ensemble_temperature_ce_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor row_stats, "
        "float temperature, float soft_weight, float hard_weight) -> Tensor");
}

namespace robustkit::ensemble_temperature_ce {
namespace {

constexpr const char* kOp = "ensemble_temperature_ce";

// A row in the accumulation type: the row itself for float/double, else a widened copy in `buffer`.
template <typename scalar_t, typename acc_t>
const acc_t* acc_row(const scalar_t* row, int64_t num_classes, std::vector<acc_t>& buffer) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return row;
  } else {
    buffer.resize(num_classes);
    for (int64_t j = 0; j < num_classes; ++j) buffer[j] = static_cast<acc_t>(row[j]);
    return buffer.data();
  }
}

// (A function template, not a branch in the dispatch lambda: `if constexpr` discards only in templates.)
template <typename scalar_t, typename acc_t>
void backward_one_row(const scalar_t* row_in, scalar_t* grad_out, int64_t num_classes, int64_t target,
                      const acc_t* stats, acc_t inv_t, acc_t gs, acc_t gh, std::vector<acc_t>& in_buffer,
                      std::vector<acc_t>& out_buffer) {
  const acc_t* row = acc_row<scalar_t, acc_t>(row_in, num_classes, in_buffer);
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    backward_row(row, grad_out, num_classes, target, stats, inv_t, gs, gh);
  } else {
    out_buffer.resize(num_classes);
    backward_row(row, out_buffer.data(), num_classes, target, stats, inv_t, gs, gh);
    for (int64_t j = 0; j < num_classes; ++j) grad_out[j] = static_cast<scalar_t>(out_buffer[j]);
  }
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& logits_in, const at::Tensor& target_in,
                                               double temperature, double soft_weight, double hard_weight) {
  check_forward_args(logits_in, target_in, temperature);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const int64_t K = logits.size(0), B = logits.size(1), C = logits.size(2);
  check_targets(target, C, kOp);
  at::Tensor loss = at::empty({B}, logits.options());
  at::Tensor stats = at::empty({kNumRowStats, K, B}, logits.options().dtype(row_stats_dtype(logits.scalar_type())));
  if (B == 0) return {loss, stats};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ensemble_ce_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const int64_t* y = target.data_ptr<int64_t>();
    scalar_t* out = loss.data_ptr<scalar_t>();
    acc_t* st = stats.data_ptr<acc_t>();
    const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
    const acc_t sw = static_cast<acc_t>(soft_weight), hw = static_cast<acc_t>(hard_weight);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> buffer;
      for (int64_t b = b0; b < b1; ++b) {
        acc_t total = 0;
        for (int64_t k = 0; k < K; ++k) {
          const acc_t* row = acc_row<scalar_t, acc_t>(z + (k * B + b) * C, C, buffer);
          acc_t row_stats[kNumRowStats], sums[4];
          row_stats[kStatMax] = row_max(row, C);
          row_sums(row, C, y[b], row_stats[kStatMax], inv_t, sums);
          row_stats[kStatLogSumT] = log_acc(sums[0]);
          row_stats[kStatLogSum1] = log_acc(sums[1]);
          row_stats[kStatLogOthersT] = log_acc(sums[2]);
          row_stats[kStatLogOthers1] = log_acc(sums[3]);
          total += row_loss<acc_t>(row_stats[kStatMax], row[y[b]], inv_t, row_stats[kStatLogSumT],
                                   row_stats[kStatLogSum1], row_stats[kStatLogOthersT],
                                   row_stats[kStatLogOthers1], sw, hw);
          for (int s = 0; s < kNumRowStats; ++s) st[(s * K + k) * B + b] = row_stats[s];
        }
        out[b] = static_cast<scalar_t>(total);
      }
    });
  });
  return {loss, stats};
}

at::Tensor backward_cpu(const at::Tensor& grad_loss_in, const at::Tensor& logits_in, const at::Tensor& target_in,
                        const at::Tensor& stats_in, double temperature, double soft_weight, double hard_weight) {
  check_backward_args(grad_loss_in, logits_in, target_in, stats_in, temperature);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor target = target_in.contiguous();
  const at::Tensor stats = stats_in.contiguous();
  const at::Tensor grad_loss = grad_loss_in.contiguous();
  const int64_t K = logits.size(0), B = logits.size(1), C = logits.size(2);
  check_targets(target, C, "_ensemble_temperature_ce_backward");  // the kernel writes grad_row[target]
  at::Tensor grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (grad.numel() == 0) return grad;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ensemble_ce_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* z = logits.data_ptr<scalar_t>();
    const int64_t* y = target.data_ptr<int64_t>();
    const scalar_t* gl = grad_loss.data_ptr<scalar_t>();
    const acc_t* st = stats.data_ptr<acc_t>();
    scalar_t* gz = grad.data_ptr<scalar_t>();
    const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
    const acc_t soft_coef = static_cast<acc_t>(soft_weight) * inv_t;
    const acc_t hw = static_cast<acc_t>(hard_weight);
    at::parallel_for(0, K * B, 1, [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> in_buffer, out_buffer;
      for (int64_t r = r0; r < r1; ++r) {
        const acc_t g = static_cast<acc_t>(gl[r % B]);
        acc_t row_stats[kNumRowStats];
        for (int s = 0; s < kNumRowStats; ++s) row_stats[s] = st[s * K * B + r];
        backward_one_row<scalar_t, acc_t>(z + r * C, gz + r * C, C, y[r % B], row_stats, inv_t, g * soft_coef,
                                          g * hw, in_buffer, out_buffer);
      }
    });
  });
  return grad;
}

}  // namespace
}  // namespace robustkit::ensemble_temperature_ce

TORCH_LIBRARY_IMPL(robustkit, CPU, m) {
  m.impl("ensemble_temperature_ce", &robustkit::ensemble_temperature_ce::forward_cpu);
  m.impl("_ensemble_temperature_ce_backward", &robustkit::ensemble_temperature_ce::backward_cpu);
}
