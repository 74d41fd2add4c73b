// CUDA kernel of robustkit::conv2d_input_grad: one thread per input pixel (grid-stride), each gathering its
// sum over output channels and kernel taps (conv2d_input_grad_math.h). cuDNN computes the same thing inside
// autograd; this kernel exists so the op runs where its tensors are. The attacks route convolutions to the op
// on CPU only, where oneDNN is the slow one.
#include <type_traits>

#include "common/cuda_utils.cuh"
#include "ops/conv2d_input_grad/conv2d_input_grad_kernel.h"

namespace robustkit::conv2d_input_grad {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) input_grad_kernel(const T* __restrict__ grad_output,
                                                               const T* __restrict__ weight,
                                                               T* __restrict__ grad_input, Shape s,
                                                               int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t x = i % s.W;
    const int64_t y = (i / s.W) % s.H;
    const int64_t ci = (i / (s.W * s.H)) % s.CI;
    const int64_t b = i / (s.W * s.H * s.CI);
    grad_input[i] = T(input_grad_at<T, T>(grad_output, weight, s, b, ci, y, x));
  }
}

}  // namespace

cudaError_t launch_conv2d_input_grad(const ConvInputGradLaunch& a, cudaStream_t stream) {
  const Shape& s = a.shape;
  const int64_t total = s.B * s.CI * s.H * s.W;
  if (total == 0) return cudaSuccess;
  return cuda::dispatch_float_double(a.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    input_grad_kernel<T><<<cuda::blocks_for(total, kThreads, 65535 * 16), kThreads, 0, stream>>>(
        static_cast<const T*>(a.grad_output), static_cast<const T*>(a.weight), static_cast<T*>(a.grad_input), s,
        total);
    return cudaGetLastError();
  });
}

}  // namespace robustkit::conv2d_input_grad
