// CUDA kernels of robustkit::deepfool_step: one block per sample. Forward: each warp reduces the norms of
// some candidates into shared memory, one thread picks the nearest boundary, the block writes the step.
// Backward: one block reduction of (norm sum, <g, direction>) over the chosen row, then the gradient row.
#include "ops/deepfool_step/deepfool_step_kernel.h"

namespace robustkit {
namespace deepfool_step {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block of two values at once; every thread gets the totals.
template <typename T>
__device__ void block_sum2(T& a, T& b) {
  __shared__ T partial[2][kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) {
    partial[0][warp] = a;
    partial[1][warp] = b;
  }
  __syncthreads();
  a = T(0);
  b = T(0);
  for (int i = 0; i < kWarps; ++i) {
    a += partial[0][i];
    b += partial[1][i];
  }
  __syncthreads();
}

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
    s = warp_sum(s);
    if (lane == 0) sums[k] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // Same rule as the CPU kernel: first minimum, and a NaN distance loses to any number.
    int64_t best = 0;
    T best_dist = boundary_distance(fb[0], sums[0], norm);
    for (int64_t k = 1; k < K; ++k) {
      const T dist = boundary_distance(fb[k], sums[k], norm);
      if (dist < best_dist || (best_dist != best_dist && dist == dist)) {
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
  const int64_t b = blockIdx.x;
  const int64_t l = index[b];
  // An index out of range (only possible when the caller edits it) leaves this sample's gradients zero;
  // checking on the host would cost a synchronisation.
  if (l < 0 || l >= K) return;
  const T* wl = w + (b * K + l) * D;
  const T* gb = grad_step + b * D;
  T sum = T(0), g_dot = T(0);
  for (int64_t i = threadIdx.x; i < D; i += kThreads) {
    sum += norm_term(wl[i], norm);
    g_dot += gb[i] * step_direction(wl[i], norm);
  }
  block_sum2(sum, g_dot);
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

template <typename T>
void launch_deepfool_step(const T* f, const T* w, T* step, int64_t* index, int64_t B, int64_t K, int64_t D,
                          Norm norm, cudaStream_t stream) {
  if (B == 0) return;
  const size_t shared_bytes = static_cast<size_t>(K) * sizeof(T);
  forward_kernel<T><<<static_cast<unsigned>(B), kThreads, shared_bytes, stream>>>(f, w, step, index, K, D, norm);
}

template <typename T>
void launch_deepfool_step_backward(const T* grad_step, const T* f, const T* w, const int64_t* index, T* grad_f,
                                   T* grad_w, int64_t B, int64_t K, int64_t D, Norm norm, cudaStream_t stream) {
  if (B == 0) return;
  backward_kernel<T><<<static_cast<unsigned>(B), kThreads, 0, stream>>>(grad_step, f, w, index, grad_f, grad_w,
                                                                        K, D, norm);
}

template void launch_deepfool_step<float>(const float*, const float*, float*, int64_t*, int64_t, int64_t, int64_t,
                                          Norm, cudaStream_t);
template void launch_deepfool_step<double>(const double*, const double*, double*, int64_t*, int64_t, int64_t,
                                           int64_t, Norm, cudaStream_t);
template void launch_deepfool_step_backward<float>(const float*, const float*, const float*, const int64_t*,
                                                   float*, float*, int64_t, int64_t, int64_t, Norm, cudaStream_t);
template void launch_deepfool_step_backward<double>(const double*, const double*, const double*, const int64_t*,
                                                    double*, double*, int64_t, int64_t, int64_t, Norm,
                                                    cudaStream_t);

}  // namespace deepfool_step
}  // namespace robustkit
