// CUDA kernels of robustkit::ensemble_temperature_ce. Torch-free: raw pointers and a stream.
// Forward: one block per sample, looping over the K models' rows (block reductions for the max and the
// two sums). Backward: element-wise over [K, B, C], reading each row's stats.
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_kernel.h"
#include "ops/ensemble_temperature_ce/ensemble_temperature_ce_math.h"

namespace robustkit::ensemble_temperature_ce {
namespace {

constexpr int kForwardThreads = 256;
constexpr int kBackwardThreads = 256;

template <typename T>
__global__ void forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ target,
                               T* __restrict__ loss, typename cuda::AccType<T>::type* __restrict__ stats,
                               int64_t K, int64_t B, int64_t C, typename cuda::AccType<T>::type inv_t,
                               typename cuda::AccType<T>::type soft_weight,
                               typename cuda::AccType<T>::type hard_weight) {
  using A = typename cuda::AccType<T>::type;
  __shared__ A scratch[32];
  const int64_t b = blockIdx.x;
  const int64_t y = target[b];
  const bool valid_target = y >= 0 && y < C;  // the glue checked the range; this only keeps memory safe
  A total = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T* row = logits + (k * B + b) * C;
    A m = -INFINITY;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) m = cuda::MaxOp()(m, cuda::to_acc(row[j]));
    m = cuda::block_reduce(m, cuda::MaxOp(), A(-INFINITY), scratch);
    A sum_t = 0, sum_1 = 0, others_t = 0, others_1 = 0;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const A z = cuda::to_acc(row[j]);
      const A et = exp_at_temperature<A>(z, m, inv_t), e1 = exp_at_one<A>(z, m);
      sum_t += et;
      sum_1 += e1;
      if (j != y) {
        others_t += et;
        others_1 += e1;
      }
    }
    sum_t = cuda::block_reduce(sum_t, cuda::SumOp(), A(0), scratch);
    sum_1 = cuda::block_reduce(sum_1, cuda::SumOp(), A(0), scratch);
    others_t = cuda::block_reduce(others_t, cuda::SumOp(), A(0), scratch);
    others_1 = cuda::block_reduce(others_1, cuda::SumOp(), A(0), scratch);
    if (threadIdx.x == 0) {
      A row_stats[kNumRowStats];
      row_stats[kStatMax] = m;
      row_stats[kStatLogSumT] = log_acc(sum_t);
      row_stats[kStatLogSum1] = log_acc(sum_1);
      row_stats[kStatLogOthersT] = log_acc(others_t);
      row_stats[kStatLogOthers1] = log_acc(others_1);
      const A z_y = valid_target ? cuda::to_acc(row[y]) : A(NAN);
      total += row_loss<A>(m, z_y, inv_t, row_stats[kStatLogSumT], row_stats[kStatLogSum1],
                           row_stats[kStatLogOthersT], row_stats[kStatLogOthers1], soft_weight, hard_weight);
      for (int s = 0; s < kNumRowStats; ++s) stats[(s * K + k) * B + b] = row_stats[s];
    }
  }
  if (threadIdx.x == 0) loss[b] = cuda::from_acc<T>(total);
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ grad_loss, const T* __restrict__ logits,
                                const int64_t* __restrict__ target,
                                const typename cuda::AccType<T>::type* __restrict__ stats, T* __restrict__ grad,
                                int64_t K, int64_t B, int64_t C, typename cuda::AccType<T>::type inv_t,
                                typename cuda::AccType<T>::type soft_coef,
                                typename cuda::AccType<T>::type hard_weight) {
  using A = typename cuda::AccType<T>::type;
  const int64_t n = K * B * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / C, j = i - r * C, b = r % B;
    const A g = cuda::to_acc(grad_loss[b]);
    const A gs = g * soft_coef, gh = g * hard_weight;
    const A log_t = stats[kStatLogSumT * K * B + r], log_1 = stats[kStatLogSum1 * K * B + r];
    const A v = j == target[b]
                    ? target_grad<A>(log_t, log_1, stats[kStatLogOthersT * K * B + r],
                                     stats[kStatLogOthers1 * K * B + r], gs, gh)
                    : grad_without_onehot<A>(cuda::to_acc(logits[i]), stats[kStatMax * K * B + r], inv_t, log_t,
                                             log_1, gs, gh);
    grad[i] = cuda::from_acc<T>(v);
  }
}

}  // namespace

cudaError_t launch_forward(DType dtype, const void* logits, const int64_t* target, void* loss, void* row_stats,
                           int64_t K, int64_t B, int64_t C, double temperature, double soft_weight,
                           double hard_weight, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  return cuda::dispatch_floating(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename cuda::AccType<T>::type;
    forward_kernel<T><<<static_cast<unsigned>(B), kForwardThreads, 0, stream>>>(
        static_cast<const T*>(logits), target, static_cast<T*>(loss), static_cast<A*>(row_stats), K, B, C,
        A(1.0 / temperature), A(soft_weight), A(hard_weight));
    return cudaGetLastError();
  });
}

cudaError_t launch_backward(DType dtype, const void* grad_loss, const void* logits, const int64_t* target,
                            const void* row_stats, void* grad_logits, int64_t K, int64_t B, int64_t C,
                            double temperature, double soft_weight, double hard_weight, cudaStream_t stream) {
  const int64_t n = K * B * C;
  if (n == 0) return cudaSuccess;
  return cuda::dispatch_floating(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using A = typename cuda::AccType<T>::type;
    backward_kernel<T><<<cuda::blocks_for(n, kBackwardThreads), kBackwardThreads, 0, stream>>>(
        static_cast<const T*>(grad_loss), static_cast<const T*>(logits), target, static_cast<const A*>(row_stats),
        static_cast<T*>(grad_logits), K, B, C, A(1.0 / temperature), A(soft_weight / temperature),
        A(hard_weight));
    return cudaGetLastError();
  });
}

}  // namespace robustkit::ensemble_temperature_ce
