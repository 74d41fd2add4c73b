// CUDA kernels of robustkit::sign_momentum_step_. Torch-free: raw pointers and a stream.
// Grid is (chunks, B): blockIdx.y is the sample, so per-sample reductions are a block reduction plus one
// atomicAdd per block. L-inf takes 2 launches (|grad| sum, update); L2 up to 4 (|grad| sum,
// momentum + ||g||^2, move + ||delta||^2, project), the same passes as the CPU kernel.
#include <cmath>
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "ops/sign_momentum_step/sign_momentum_step_kernel.h"
#include "ops/sign_momentum_step/sign_momentum_step_math.h"

namespace robustkit::sign_momentum_step {
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
  SquareSum* abs_sum;   // [B]
  SquareSum* g_sq;      // [B]
  SquareSum* delta_sq;  // [B]
  int64_t n;
  T step, eps, decay, clip_min, clip_max;
  bool l1;
};

// The per-sample sums are accumulated in double (SquareSum), as on the CPU, so float32 squares cannot overflow.
__device__ __forceinline__ void add_to_sample(SquareSum v, SquareSum* out, int64_t b) {
  __shared__ SquareSum scratch[32];
  v = cuda::block_reduce(v, cuda::SumOp(), SquareSum(0), scratch);
  if (threadIdx.x == 0) atomicAdd(out + b, v);
}

#define RK_SAMPLE_LOOP(i) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void abs_sum_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  SquareSum s = 0;
  RK_SAMPLE_LOOP(i) s += fabs(SquareSum(p.grad[off + i]));
  add_to_sample(s, p.abs_sum, b);
}

template <typename T>
__device__ __forceinline__ T inv_grad_norm(const Params<T>& p, int64_t b) {
  return p.l1 ? T(inverse_norm(p.abs_sum[b])) : T(1);
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
  SquareSum sq = 0;
  RK_SAMPLE_LOOP(i) {
    T g = p.grad[off + i] * inv;
    if (p.momentum) {
      g = momentum_update(p.momentum[off + i], p.grad[off + i], p.decay, inv);
      p.momentum[off + i] = g;
    }
    sq += SquareSum(g) * SquareSum(g);
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
  const T step_over_gnorm = T(SquareSum(step) * inverse_norm(sqrt(p.g_sq[b])));
  SquareSum sq = 0;
  RK_SAMPLE_LOOP(i) {
    const T g = p.momentum ? p.momentum[off + i] : p.grad[off + i] * g_scale;
    const T moved = l2_move(p.x[off + i], g, step_over_gnorm);
    p.x[off + i] = moved;
    const SquareSum d = SquareSum(moved - p.x_orig[off + i]);
    sq += d * d;
  }
  add_to_sample(sq, p.delta_sq, b);
}

// L2 pass 3: back into the eps-ball and the box.
template <typename T>
__global__ void l2_project_kernel(Params<T> p) {
  const int64_t b = blockIdx.y, off = b * p.n;
  const T eps = p.eps_t ? p.eps_t[b] : p.eps;
  const T factor = T(l2_factor(sqrt(p.delta_sq[b]), SquareSum(eps)));
  RK_SAMPLE_LOOP(i) p.x[off + i] = l2_project(p.x[off + i], p.x_orig[off + i], factor, p.clip_min, p.clip_max);
}

// One launch sequence over samples [b0, b0 + nb), nb <= kMaxGridY (blockIdx.y is the sample within it).
template <typename T>
cudaError_t launch_chunk(const StepLaunch& a, int64_t b0, int64_t nb, cudaStream_t stream) {
  const int64_t off = b0 * a.per_sample;
  auto shift = [&](const void* base, int64_t by) { return base ? static_cast<const T*>(base) + by : nullptr; };
  SquareSum* ws = static_cast<SquareSum*>(a.workspace);  // [3, batch]: abs_sum, g_sq, delta_sq
  Params<T> p{static_cast<T*>(a.x_adv) + off, shift(a.x_orig, off), shift(a.grad, off),
              a.momentum ? static_cast<T*>(a.momentum) + off : nullptr, shift(a.step_per_sample, b0),
              shift(a.eps_per_sample, b0), ws + b0, ws + a.batch + b0, ws + 2 * a.batch + b0, a.per_sample,
              T(a.step_size), T(a.eps), T(a.decay), T(a.clip_min), T(a.clip_max),
              a.grad_norm == static_cast<int>(GradNorm::kL1)};
  const dim3 grid(cuda::blocks_for(a.per_sample, kThreads, kMaxChunks), static_cast<unsigned>(nb));
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
  return cuda::dispatch_float_double(args.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    for (int64_t b0 = 0; b0 < args.batch; b0 += cuda::kMaxGridY) {
      const int64_t nb = args.batch - b0 < cuda::kMaxGridY ? args.batch - b0 : cuda::kMaxGridY;
      const cudaError_t err = launch_chunk<T>(args, b0, nb, stream);
      if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
  });
}

}  // namespace robustkit::sign_momentum_step
