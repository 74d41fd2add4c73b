// CUDA glue of robustkit::conv2d_input_grad (CUDA builds only): checks, device guard, current stream, empty
// return, contiguity, dtype mapping, launch-error check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/cuda_glue.h"
#include "ops/conv2d_input_grad/conv2d_input_grad.h"
#include "ops/conv2d_input_grad/conv2d_input_grad_kernel.h"

namespace robustkit::conv2d_input_grad {
namespace {

at::Tensor conv2d_input_grad_cuda(const at::Tensor& grad_output_in, const at::Tensor& weight_in,
                                  at::IntArrayRef input_size, at::IntArrayRef padding) {
  const Shape s = check_args(grad_output_in, weight_in, input_size, padding);
  const c10::cuda::CUDAGuard guard(grad_output_in.device());
  const at::Tensor g = grad_output_in.contiguous(), w = weight_in.contiguous();
  at::Tensor out = at::empty({s.B, s.CI, s.H, s.W}, g.options());
  if (out.numel() == 0) return out;
  if (s.CO == 0) return out.zero_();
  const ConvInputGradLaunch args{to_dtype(g.scalar_type(), kOp, "grad_output"), g.data_ptr(), w.data_ptr(),
                                 out.data_ptr(), s};
  RK_CUDA_CHECK_LAUNCH(launch_conv2d_input_grad(args, c10::cuda::getCurrentCUDAStream().stream()), kOp);
  return out;
}

}  // namespace
}  // namespace robustkit::conv2d_input_grad

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("conv2d_input_grad", &robustkit::conv2d_input_grad::conv2d_input_grad_cuda);
}
