// CUDA glue of robustkit::deepfool_step and its backward (CUDA builds only): checks, device guard, current
// stream, empty-batch return, contiguity, dtype mapping, launch-error check.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "common/cuda_glue.h"
#include "ops/deepfool_step/deepfool_step.h"
#include "ops/deepfool_step/deepfool_step_kernel.h"

namespace robustkit::deepfool_step {
namespace {

std::tuple<at::Tensor, at::Tensor> deepfool_step_cuda(const at::Tensor& f_in, const at::Tensor& w_in,
                                                       c10::string_view norm_s) {
  check_forward_args(f_in, w_in);
  const Norm norm = parse_norm(kOp, norm_s);
  RK_CHECK(w_in.size(1) <= kMaxCudaCandidates, kOp, "w must hold at most ", kMaxCudaCandidates,
           " candidates on CUDA, got K = ", w_in.size(1));
  const c10::cuda::CUDAGuard guard(w_in.device());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor step = at::empty({B, D}, w.options());
  at::Tensor index = at::zeros({B}, w.options().dtype(at::kLong));
  if (B == 0) return {step, index};
  const DeepFoolLaunch args{to_dtype(w.scalar_type(), kOp, "w"), f.data_ptr(), w.data_ptr(), step.data_ptr(),
                            index.data_ptr<int64_t>(), B, K, D, norm};
  RK_CUDA_CHECK_LAUNCH(launch_deepfool_step(args, c10::cuda::getCurrentCUDAStream().stream()), kOp);
  return {step, index};
}

std::tuple<at::Tensor, at::Tensor> deepfool_step_backward_cuda(const at::Tensor& grad_in, const at::Tensor& f_in,
                                                                const at::Tensor& w_in,
                                                                const at::Tensor& index_in,
                                                                c10::string_view norm_s) {
  constexpr const char* op = "_deepfool_step_backward";
  check_backward_args(grad_in, f_in, w_in, index_in);
  const Norm norm = parse_norm(op, norm_s);
  const c10::cuda::CUDAGuard guard(w_in.device());
  const at::Tensor g = grad_in.contiguous(), f = f_in.contiguous(), w = w_in.contiguous();
  const at::Tensor index = index_in.contiguous();
  const int64_t B = w.size(0), K = w.size(1), D = w.size(2);
  at::Tensor grad_f = at::zeros({B, K}, f.options());
  at::Tensor grad_w = at::zeros({B, K, D}, w.options());
  if (B == 0 || D == 0) return {grad_f, grad_w};
  const DeepFoolBackwardLaunch args{to_dtype(w.scalar_type(), op, "w"), g.data_ptr(), f.data_ptr(), w.data_ptr(),
                                    index.data_ptr<int64_t>(), grad_f.data_ptr(), grad_w.data_ptr(), B, K, D,
                                    norm};
  RK_CUDA_CHECK_LAUNCH(launch_deepfool_step_backward(args, c10::cuda::getCurrentCUDAStream().stream()), op);
  return {grad_f, grad_w};
}

}  // namespace
}  // namespace robustkit::deepfool_step

TORCH_LIBRARY_IMPL(robustkit, CUDA, m) {
  m.impl("deepfool_step", &robustkit::deepfool_step::deepfool_step_cuda);
  m.impl("_deepfool_step_backward", &robustkit::deepfool_step::deepfool_step_backward_cuda);
}
