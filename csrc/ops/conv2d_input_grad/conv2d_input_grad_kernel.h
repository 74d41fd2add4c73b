// Launcher of the CUDA kernel of robustkit::conv2d_input_grad (torch-free: untyped device pointers, a DType and
// a stream, so the .cu compiles with nvcc alone). grad_output [B, CO, OH, OW], weight [CO, CI, KH, KW] and
// grad_input [B, CI, H, W] are dense, contiguous device buffers. A grid-stride loop over the input pixels, so
// any batch size.
#pragma once

#include <cuda_runtime_api.h>

#include "common/dtype.h"
#include "ops/conv2d_input_grad/conv2d_input_grad_math.h"

namespace robustkit::conv2d_input_grad {

struct ConvInputGradLaunch {
  DType dtype;  // kFloat32 or kFloat64
  const void* grad_output;
  const void* weight;
  void* grad_input;
  Shape shape;
};

cudaError_t launch_conv2d_input_grad(const ConvInputGradLaunch& args, cudaStream_t stream);

}  // namespace robustkit::conv2d_input_grad
