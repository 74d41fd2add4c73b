// CUDA kernels of robustkit::sign_momentum_step_. Torch-free: raw pointers and a stream.
// Grid is (chunks, B): blockIdx.y is the sample, so per-sample reductions are a block reduction plus one
// atomicAdd per block. L-inf takes 2 launches (|grad| sum, update); L2 up to 4 (|grad| sum,
// momentum + ||g||^2, move + ||delta||^2, project), the same passes as the CPU kernel.
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "ops/sign_step/sign_step_kernel.h"
#include "ops/sign_step/sign_step_math.h"

namespace robustkit {
namespace sign_step {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxChunks = 1024;

template <typename T>
struct Params {
  T* x;
  const T* x_orig;
  const T* grad;
  T* momentum;
  const T* step_t;
  const T* eps_t;
  T* abs_sum;   // [B]
  T* g_sq;      // [B]
  T* delta_sq;  // [B]
  int64_t n;
  T step, eps, decay, clip_min, clip_max;
  bool l1;
};

template <typename T>
__device__ __forceinline__ void add_to_sample(T v, T* out, int64_t b) {
  __shared__ T scratch[32];
  v = cuda::block_reduce(v, cuda::SumOp(), T(0), scratch);
  if (threadIdx.x == 0) atomicAdd(out + b, v);
}

#define RK_SAMPLE_LOOP(i) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void abs_sum_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  T s = 0;
  RK_SAMPLE_LOOP(i) s += fabs(p.grad[off + i]);
  add_to_sample(s, p.abs_sum, b);
}

template <typename T>
__device__ __forceinline__ T inv_grad_norm(const Params<T>& p, int64_t b) {
  return p.l1 ? inverse_norm(p.abs_sum[b]) : T(1);
}

template <typename T>
__global__ void linf_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  const T inv = inv_grad_norm(p, b);
  const T step = p.step_t ? p.step_t[b] : p.step, eps = p.eps_t ? p.eps_t[b] : p.eps;
  RK_SAMPLE_LOOP(i) {
    T g = p.grad[off + i] * inv;
    if (p.momentum) {
      g = momentum_update(p.momentum[off + i], p.grad[off + i], p.decay, inv);
      p.momentum[off + i] = g;
    }
    p.x[off + i] = linf_step(p.x[off + i], p.x_orig[off + i], g, step, eps, p.clip_min, p.clip_max);
  }
}

// L2 pass 1: the new momentum (if any) and sum g^2.
template <typename T>
__global__ void l2_momentum_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  const T inv = inv_grad_norm(p, b);
  T sq = 0;
  RK_SAMPLE_LOOP(i) {
    T g = p.grad[off + i] * inv;
    if (p.momentum) {
      g = momentum_update(p.momentum[off + i], p.grad[off + i], p.decay, inv);
      p.momentum[off + i] = g;
    }
    sq += g * g;
  }
  add_to_sample(sq, p.g_sq, b);
}

// L2 pass 2: x <- x + step * g / ||g||, and sum delta^2.
template <typename T>
__global__ void l2_move_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  const T inv = inv_grad_norm(p, b);
  const T step = p.step_t ? p.step_t[b] : p.step;
  const T g_scale = p.momentum ? T(1) : inv;
  const T step_over_gnorm = step * inverse_norm(sqrt(p.g_sq[b]));
  T sq = 0;
  RK_SAMPLE_LOOP(i) {
    const T g = p.momentum ? p.momentum[off + i] : p.grad[off + i] * g_scale;
    const T moved = l2_move(p.x[off + i], g, step_over_gnorm);
    p.x[off + i] = moved;
    const T d = moved - p.x_orig[off + i];
    sq += d * d;
  }
  add_to_sample(sq, p.delta_sq, b);
}

// L2 pass 3: back into the eps-ball and the box.
template <typename T>
__global__ void l2_project_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  const T eps = p.eps_t ? p.eps_t[b] : p.eps;
  const T factor = l2_factor(sqrt(p.delta_sq[b]), eps);
  RK_SAMPLE_LOOP(i) p.x[off + i] = l2_project(p.x[off + i], p.x_orig[off + i], factor, p.clip_min, p.clip_max);
}

template <typename T>
cudaError_t launch_typed(const StepLaunch& a, cudaStream_t stream) {
  T* ws = static_cast<T*>(a.workspace);
  Params<T> p{static_cast<T*>(a.x_adv), static_cast<const T*>(a.x_orig), static_cast<const T*>(a.grad),
              static_cast<T*>(a.momentum), static_cast<const T*>(a.step_per_sample),
              static_cast<const T*>(a.eps_per_sample), ws, ws + a.batch, ws + 2 * a.batch, a.per_sample,
              T(a.step_size), T(a.eps), T(a.decay), T(a.clip_min), T(a.clip_max),
              a.grad_norm == static_cast<int>(GradNorm::kL1)};
  if (a.batch > 65535) return cudaErrorInvalidConfiguration;  // gridDim.y limit; the glue splits batches
  const dim3 grid(cuda::blocks_for(a.per_sample, kThreads, kMaxChunks), static_cast<unsigned>(a.batch));
  if (p.l1) abs_sum_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  if (a.norm == static_cast<int>(Norm::kLinf)) {
    linf_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  } else {
    l2_momentum_kernel<T><<<grid, kThreads, 0, stream>>>(p);
    l2_move_kernel<T><<<grid, kThreads, 0, stream>>>(p);
    l2_project_kernel<T><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sign_momentum_step(const StepLaunch& args, cudaStream_t stream) {
  if (args.batch == 0 || args.per_sample == 0) return cudaSuccess;
  switch (args.dtype) {
    case DType::kFloat32: return launch_typed<float>(args, stream);
    case DType::kFloat64: return launch_typed<double>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace sign_step
}  // namespace robustkit
