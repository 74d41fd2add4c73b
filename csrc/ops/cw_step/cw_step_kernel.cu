// CUDA kernels of robustkit::cw_l2_step_, three launches so that every sample may span many blocks (ImageNet
// inputs are 150k elements, batches often small):
//   1. ||x - x_orig||^2 per sample: a grid of (chunks, B) blocks, block reduction, one atomicAdd per block;
//   2. the element-wise step over all B * n elements: best-so-far copy, gradient, Adam, new x;
//   3. best_l2sq per sample, after kernel 2 has read the old values.
#include "ops/cw_step/cw_step_kernel.h"
#include "ops/cw_step/cw_step_math.h"

namespace robustkit {
namespace cw_step {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kElementsPerReduceBlock = 8 * kThreads;

template <typename T>
__device__ bool improves(const CwStepArgs<T>& a, int64_t b) {
  return a.success[b] && a.l2sq[b] < a.best_l2sq[b];
}

template <typename T>
__global__ void __launch_bounds__(kThreads) l2sq_kernel(CwStepArgs<T> a) {
  __shared__ T partial[kWarps];
  const int64_t b = blockIdx.y;
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
  for (int offset = 16; offset > 0; offset >>= 1) sq += __shfl_down_sync(0xffffffffu, sq, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sq;
  __syncthreads();
  if (threadIdx.x == 0) {
    T total = T(0);
    for (int i = 0; i < kWarps; ++i) total += partial[i];
    atomicAdd(a.l2sq + b, total);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) step_kernel(CwStepArgs<T> a) {
  const int64_t total = a.batch * a.per_sample;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t b = idx / a.per_sample;
    const T x = a.x[idx];
    if (improves(a, b)) a.best_adv[idx] = x;
    T w = a.w[idx], m = a.exp_avg[idx], v = a.exp_avg_sq[idx];
    a.x[idx] = adam_update(w, m, v, x, a.x_orig[idx], a.loss_grad[idx], a.clip_min, a.clip_max, a.lr, a.beta1,
                           a.beta2, a.eps, a.inv_bias_correction1, a.inv_sqrt_bias_correction2);
    a.w[idx] = w;
    a.exp_avg[idx] = m;
    a.exp_avg_sq[idx] = v;
  }
}

template <typename T>
__global__ void best_kernel(CwStepArgs<T> a) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < a.batch && improves(a, b)) a.best_l2sq[b] = a.l2sq[b];
}

}  // namespace

template <typename T>
void launch_cw_l2_step(const CwStepArgs<T>& args, cudaStream_t stream) {
  if (args.batch == 0 || args.per_sample == 0) return;
  const int64_t chunks = (args.per_sample + kElementsPerReduceBlock - 1) / kElementsPerReduceBlock;
  l2sq_kernel<T><<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(args.batch)), kThreads, 0, stream>>>(
      args);
  const int64_t total = args.batch * args.per_sample;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  // A grid-stride loop bounds the grid; 65535 * 256 elements per sweep saturates any current GPU.
  step_kernel<T><<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0, stream>>>(args);
  best_kernel<T><<<static_cast<unsigned>((args.batch + kThreads - 1) / kThreads), kThreads, 0, stream>>>(args);
}

template void launch_cw_l2_step<float>(const CwStepArgs<float>&, cudaStream_t);
template void launch_cw_l2_step<double>(const CwStepArgs<double>&, cudaStream_t);

}  // namespace cw_step
}  // namespace robustkit
