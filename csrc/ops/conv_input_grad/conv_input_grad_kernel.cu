// CUDA kernel of robustkit::conv2d_input_grad: one thread per input pixel (grid-stride), each gathering its
// sum over output channels and kernel taps (conv_input_grad_math.h). cuDNN computes the same thing inside
// autograd; this kernel exists so the op runs where its tensors are. The attacks route convolutions to the op
// on CPU only, where oneDNN is the slow one.
#include "ops/conv_input_grad/conv_input_grad_kernel.h"

namespace robustkit {
namespace conv_input_grad {
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

template <typename T>
cudaError_t launch_conv2d_input_grad(const T* grad_output, const T* weight, T* grad_input, const Shape& shape,
                                     cudaStream_t stream) {
  const int64_t total = shape.B * shape.CI * shape.H * shape.W;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const int grid = static_cast<int>(blocks < 65535 * 16 ? blocks : 65535 * 16);
  input_grad_kernel<T><<<grid, kThreads, 0, stream>>>(grad_output, weight, grad_input, shape, total);
  return cudaGetLastError();
}

template cudaError_t launch_conv2d_input_grad<float>(const float*, const float*, float*, const Shape&,
                                                     cudaStream_t);
template cudaError_t launch_conv2d_input_grad<double>(const double*, const double*, double*, const Shape&,
                                                      cudaStream_t);

}  // namespace conv_input_grad
}  // namespace robustkit
