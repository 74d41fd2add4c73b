// CUDA glue of robustkit::deepfool_step and its backward: checks, device guard, current stream, early
// return on empty input, dtype dispatch, launch-error check. Compiled only in CUDA builds.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "ops/deepfool_step/deepfool_step.h"
#include "ops/deepfool_step/deepfool_step_kernel.h"

namespace robustkit {
namespace deepfool_step {
namespace {

std::tuple<at::Tensor, at::Tensor> deepfool_step_cuda(const at::Tensor& f_in, const at::Tensor& w_in,
                                                       c10::string_view norm_s) {
  check_forward_args(f_in, w_in);
  const Norm norm = parse_norm(std::string(norm_s));
  RK_CHECK(w_in.size(1) <= kMaxCudaCandidates, kOp, "w must hold at most ", kMaxCudaCandidates,
           " candidates on CUDA, got K = ", w_in.size(1));
  const c10::cuda::CUDAGuard guard(w_in.device());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor step = at::zeros({B, D}, w.options());
  at::Tensor index = at::zeros({B}, w.options().dtype(at::kLong));
  if (B == 0 || D == 0) return {step, index};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "deepfool_step_cuda", [&] {
    launch_deepfool_step<scalar_t>(f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), step.data_ptr<scalar_t>(),
                                   index.data_ptr<int64_t>(), B, K, D, norm, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {step, index};
}

std::tuple<at::Tensor, at::Tensor> deepfool_step_backward_cuda(const at::Tensor& grad_in, const at::Tensor& f_in,
                                                                const at::Tensor& w_in,
                                                                const at::Tensor& index_in,
                                                                c10::string_view norm_s) {
  check_backward_args(grad_in, f_in, w_in, index_in);
  const Norm norm = parse_norm(std::string(norm_s));
  const c10::cuda::CUDAGuard guard(w_in.device());
  const at::Tensor g = grad_in.contiguous(), f = f_in.contiguous(), w = w_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor grad_f = at::zeros({B, K}, f.options());
  at::Tensor grad_w = at::zeros({B, K, D}, w.options());
  if (B == 0 || D == 0) return {grad_f, grad_w};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "_deepfool_step_backward_cuda", [&] {
    launch_deepfool_step_backward<scalar_t>(g.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                            index.data_ptr<int64_t>(), grad_f.data_ptr<scalar_t>(),
                                            grad_w.data_ptr<scalar_t>(), B, K, D, norm, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_f, grad_w};
}

}  // namespace
}  // namespace deepfool_step
}  // namespace robustkit

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("deepfool_step", &robustkit::deepfool_step::deepfool_step_cuda);
  m.impl("_deepfool_step_backward", &robustkit::deepfool_step::deepfool_step_backward_cuda);
}
