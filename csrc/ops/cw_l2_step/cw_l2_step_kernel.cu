// CUDA kernels of robustkit::cw_l2_step_, three launches so that every sample may span many blocks (ImageNet
// inputs are 150k elements, batches often small):
//   1. ||x - x_orig||^2 per sample: a grid of (chunks, B) blocks, block reduction, one atomicAdd per block;
//   2. the element-wise step over all B * n elements: best-so-far copy, gradient, Adam, new x;
//   3. best_l2sq per sample, after kernel 2 has read the old values.
#include "ops/cw_l2_step/cw_l2_step_kernel.h"
#include "ops/cw_l2_step/cw_l2_step_math.h"

#include <type_traits>

#include "common/cuda_utils.cuh"

namespace robustkit::cw_l2_step {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kElementsPerReduceBlock = 8 * kThreads;

// The typed view of CwStepLaunch the kernels read.
template <typename T>
struct Args {
  T* w;
  T* x;
  T* exp_avg;
  T* exp_avg_sq;
  T* best_adv;
  T* best_l2sq;
  const T* x_orig;
  const T* loss_grad;
  const bool* success;
  T* l2sq;
  int64_t batch, per_sample;
  CwCoefs<T> c;
};

template <typename T>
__device__ bool improves_at(const Args<T>& a, int64_t b) {
  return improves(a.success[b], a.l2sq[b], a.best_l2sq[b]);
}

// Samples [b0, b0 + gridDim.y): blockIdx.y is the sample within the chunk.
template <typename T>
__global__ void __launch_bounds__(kThreads) l2sq_kernel(Args<T> a, int64_t b0) {
  __shared__ T scratch[32];
  const int64_t b = b0 + blockIdx.y;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kElementsPerReduceBlock;
  const int64_t end = begin + kElementsPerReduceBlock < a.per_sample ? begin + kElementsPerReduceBlock
                                                                      : a.per_sample;
  const T* xb = a.x + b * a.per_sample;
  const T* xob = a.x_orig + b * a.per_sample;
  T sq = T(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const T d = xb[i] - xob[i];
    sq += d * d;
  }
  sq = cuda::block_reduce(sq, cuda::SumOp(), T(0), scratch);
  if (threadIdx.x == 0) atomicAdd(a.l2sq + b, sq);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) step_kernel(Args<T> a) {
  const int64_t total = a.batch * a.per_sample;
  const CwCoefs<T> c = a.c;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t b = idx / a.per_sample;
    const T x = a.x[idx];
    if (improves_at(a, b)) a.best_adv[idx] = x;
    T w = a.w[idx], m = a.exp_avg[idx], v = a.exp_avg_sq[idx];
    a.x[idx] = adam_update(w, m, v, x, a.x_orig[idx], a.loss_grad[idx], c.lo, c.hi, c.lr, c.beta1, c.beta2,
                           c.one_minus_beta1, c.one_minus_beta2, c.adam_eps, c.inv_bc1, c.inv_sqrt_bc2);
    a.w[idx] = w;
    a.exp_avg[idx] = m;
    a.exp_avg_sq[idx] = v;
  }
}

template <typename T>
__global__ void best_kernel(Args<T> a) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < a.batch && improves_at(a, b)) a.best_l2sq[b] = a.l2sq[b];
}

}  // namespace

cudaError_t launch_cw_l2_step(const CwStepLaunch& l, cudaStream_t stream) {
  if (l.batch == 0 || l.per_sample == 0) return cudaSuccess;
  return cuda::dispatch_float_double(l.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const Args<T> a{static_cast<T*>(l.w), static_cast<T*>(l.x), static_cast<T*>(l.exp_avg),
                    static_cast<T*>(l.exp_avg_sq), static_cast<T*>(l.best_adv), static_cast<T*>(l.best_l2sq),
                    static_cast<const T*>(l.x_orig), static_cast<const T*>(l.loss_grad), l.success,
                    static_cast<T*>(l.l2sq), l.batch, l.per_sample,
                    make_coefs<T>(l.clip_min, l.clip_max, l.lr, l.beta1, l.beta2, l.adam_eps, l.step)};
    const int64_t chunks = (l.per_sample + kElementsPerReduceBlock - 1) / kElementsPerReduceBlock;
    for (int64_t b0 = 0; b0 < l.batch; b0 += cuda::kMaxGridY) {
      const int64_t nb = l.batch - b0 < cuda::kMaxGridY ? l.batch - b0 : cuda::kMaxGridY;
      l2sq_kernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(nb)), kThreads, 0, stream>>>(a, b0);
    }
    const int64_t total = l.batch * l.per_sample;
    const int64_t blocks = (total + kThreads - 1) / kThreads;
    // A grid-stride loop bounds the grid; 65535 * 256 elements per sweep saturates any current GPU.
    step_kernel<T><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(a);
    best_kernel<T><<<static_cast<unsigned>((l.batch + kThreads - 1) / kThreads), kThreads, 0, stream>>>(a);
    return cudaGetLastError();
  });
}

}  // namespace robustkit::cw_l2_step
