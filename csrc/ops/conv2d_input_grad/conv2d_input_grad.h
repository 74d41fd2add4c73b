// Argument checks and the shape shared by the CPU and CUDA glue of robustkit::conv2d_input_grad.
#pragma once

#include <ATen/ATen.h>

#include "common/checks.h"
#include "ops/conv2d_input_grad/conv2d_input_grad_math.h"

namespace robustkit::conv2d_input_grad {

constexpr const char* kOp = "conv2d_input_grad";
constexpr int64_t kMaxExtent = (int64_t{1} << 31) - 1;

inline Shape check_args(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                        at::IntArrayRef padding) {
  RK_CHECK_DIM(grad_output, 4, kOp, "grad_output", "[B, C_out, OH, OW]");
  RK_CHECK_DIM(weight, 4, kOp, "weight", "[C_out, C_in, KH, KW]");
  RK_CHECK(grad_output.scalar_type() == at::kFloat || grad_output.scalar_type() == at::kDouble, kOp,
           "grad_output must be float32 or float64, got ", dtype_name(grad_output.scalar_type()));
  RK_CHECK_DTYPE(weight, grad_output.scalar_type(), kOp, "weight");
  RK_CHECK_SAME_DEVICE(grad_output, weight, kOp, "grad_output", "weight");
  // Bounding H, W and the padding by 2^31 - 1 keeps the shape arithmetic below (H + 2 pad_h - KH + 1, the padded
  // planes' sizes) far from int64 overflow, which would otherwise let a huge padding pass the check.
  RK_CHECK(input_size.size() == 2 && input_size[0] >= 0 && input_size[1] >= 0 && input_size[0] <= kMaxExtent &&
               input_size[1] <= kMaxExtent,
           kOp, "input_size must be [H, W] with 0 <= H, W <= ", kMaxExtent, ", got ", input_size);
  RK_CHECK(padding.size() == 2 && padding[0] >= 0 && padding[1] >= 0 && padding[0] <= kMaxExtent &&
               padding[1] <= kMaxExtent,
           kOp, "padding must be [pad_h, pad_w] with 0 <= both <= ", kMaxExtent, ", got ", padding);
  RK_CHECK(grad_output.size(1) == weight.size(0), kOp, "grad_output's channels (", grad_output.size(1),
           ") must equal weight's C_out (", weight.size(0), ")");
  Shape s{grad_output.size(0), weight.size(1), input_size[0], input_size[1], weight.size(0), grad_output.size(2),
          grad_output.size(3), weight.size(2), weight.size(3), padding[0], padding[1]};
  RK_CHECK(s.OH == s.H + 2 * s.PH - s.KH + 1 && s.OW == s.W + 2 * s.PW - s.KW + 1, kOp,
           "grad_output's plane must be [H + 2 pad_h - KH + 1, W + 2 pad_w - KW + 1] = [",
           s.H + 2 * s.PH - s.KH + 1, ", ", s.W + 2 * s.PW - s.KW + 1, "] (stride 1, dilation 1), got [", s.OH,
           ", ", s.OW, "]");
  // A convolution's output plane is never empty (aten's conv2d rejects a kernel larger than the padded input),
  // so neither is its gradient's: the backward of this op would have no convolution to run.
  RK_CHECK(s.OH >= 1 && s.OW >= 1, kOp, "grad_output's plane must be non-empty (the kernel [", s.KH, ", ", s.KW,
           "] must fit the padded input [", s.H + 2 * s.PH, ", ", s.W + 2 * s.PW, "]), got [", s.OH, ", ", s.OW, "]");
  return s;
}

}  // namespace robustkit::conv2d_input_grad
