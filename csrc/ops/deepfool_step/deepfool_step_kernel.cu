// CUDA kernels of robustkit::deepfool_step: one block per sample. Forward: each warp reduces the norms of
// some candidates into shared memory, one thread picks the nearest boundary, the block writes the step.
// Backward: one block reduction of (norm sum, <g, direction>) over the chosen row, then the gradient row.
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "ops/deepfool_step/deepfool_step_kernel.h"
#include "ops/deepfool_step/deepfool_step_math.h"

namespace robustkit::deepfool_step {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* __restrict__ f, const T* __restrict__ w,
                                                            T* __restrict__ step, int64_t* __restrict__ index,
                                                            int64_t K, int64_t D, Norm norm) {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_raw[];
  T* sums = reinterpret_cast<T*>(shared_raw);  // [K]
  __shared__ int64_t chosen;
  const int64_t b = blockIdx.x;
  const T* fb = f + b * K;
  const T* wb = w + b * K * D;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t k = warp; k < K; k += kWarps) {
    const T* wk = wb + k * D;
    T s = T(0);
    for (int64_t i = lane; i < D; i += 32) s += norm_term(wk[i], norm);
    s = cuda::warp_reduce(s, cuda::SumOp());
    if (lane == 0) sums[k] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // The CPU kernel's rule, nearer() (deepfool_step_math.h).
    int64_t best = 0;
    T best_dist = boundary_distance(fb[0], sums[0], norm);
    for (int64_t k = 1; k < K; ++k) {
      const T dist = boundary_distance(fb[k], sums[k], norm);
      if (nearer(dist, best_dist)) {
        best = k;
        best_dist = dist;
      }
    }
    chosen = best;
    index[b] = best;
  }
  __syncthreads();
  const int64_t l = chosen;
  const T scale = step_scale(fb[l], sums[l], norm);
  const T* wl = wb + l * D;
  T* r = step + b * D;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) r[i] = scale * step_direction(wl[i], norm);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) backward_kernel(const T* __restrict__ grad_step,
                                                             const T* __restrict__ f, const T* __restrict__ w,
                                                             const int64_t* __restrict__ index,
                                                             T* __restrict__ grad_f, T* __restrict__ grad_w,
                                                             int64_t K, int64_t D, Norm norm) {
  __shared__ T scratch[32];
  const int64_t b = blockIdx.x;
  const int64_t l = index[b];
  if (l < 0 || l >= K) return;  // the glue checked the range on the host; this only keeps memory safe
  const T* wl = w + (b * K + l) * D;
  const T* gb = grad_step + b * D;
  T sum = T(0), g_dot = T(0);
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    sum += norm_term(wl[i], norm);
    g_dot += gb[i] * step_direction(wl[i], norm);
  }
  sum = cuda::block_reduce(sum, cuda::SumOp(), T(0), scratch);
  g_dot = cuda::block_reduce(g_dot, cuda::SumOp(), T(0), scratch);
  const T f_l = f[b * K + l];
  const T scale = step_scale(f_l, sum, norm);
  if (threadIdx.x == 0) grad_f[b * K + l] = grad_f_value(f_l, sum, g_dot, norm);
  const T coef = grad_w_norm_coef(scale, sum, g_dot, norm);
  T* out = grad_w + (b * K + l) * D;
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    out[i] = grad_w_value(gb[i], wl[i], scale, coef, norm);
  }
}

}  // namespace

cudaError_t launch_deepfool_step(const DeepFoolLaunch& a, cudaStream_t stream) {
  if (a.batch == 0) return cudaSuccess;
  return cuda::dispatch_float_double(a.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const size_t shared_bytes = static_cast<size_t>(a.candidates) * sizeof(T);
    forward_kernel<T><<<static_cast<unsigned>(a.batch), kThreads, shared_bytes, stream>>>(
        static_cast<const T*>(a.f), static_cast<const T*>(a.w), static_cast<T*>(a.step), a.index, a.candidates,
        a.dim, a.norm);
    return cudaGetLastError();
  });
}

cudaError_t launch_deepfool_step_backward(const DeepFoolBackwardLaunch& a, cudaStream_t stream) {
  if (a.batch == 0 || a.dim == 0) return cudaSuccess;
  return cuda::dispatch_float_double(a.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    backward_kernel<T><<<static_cast<unsigned>(a.batch), kThreads, 0, stream>>>(
        static_cast<const T*>(a.grad_step), static_cast<const T*>(a.f), static_cast<const T*>(a.w), a.index,
        static_cast<T*>(a.grad_f), static_cast<T*>(a.grad_w), a.candidates, a.dim, a.norm);
    return cudaGetLastError();
  });
}

}  // namespace robustkit::deepfool_step
