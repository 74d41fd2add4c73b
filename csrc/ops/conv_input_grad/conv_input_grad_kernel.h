// Launcher of the CUDA kernel of robustkit::conv2d_input_grad (torch-free: raw pointers and a stream, so the
// .cu compiles with nvcc alone). grad_output [B, CO, OH, OW], weight [CO, CI, KH, KW] and grad_input
// [B, CI, H, W] are dense, contiguous device buffers.
#pragma once

#include <cuda_runtime.h>

#include "ops/conv_input_grad/conv_input_grad_math.h"

namespace robustkit {
namespace conv_input_grad {

template <typename T>
cudaError_t launch_conv2d_input_grad(const T* grad_output, const T* weight, T* grad_input, const Shape& shape,
                                     cudaStream_t stream);

}  // namespace conv_input_grad
}  // namespace robustkit
