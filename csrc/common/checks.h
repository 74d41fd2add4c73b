// Argument checks whose messages name the argument and what was expected, e.g.
//   "ensemble_temperature_ce: logits must be a 3-D [K, B, C] tensor, got shape [3, 7]".
// Torch-only: used by the *_cpu.cpp and *_cuda.cpp glue, never by the .cu kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#define RK_CHECK(cond, op, ...) TORCH_CHECK(cond, op, ": ", __VA_ARGS__)

#define RK_CHECK_DIM(t, n, op, name, layout)                                                    \
  RK_CHECK((t).dim() == (n), op, name " must be a " #n "-D " layout " tensor, got shape ", \
           (t).sizes())

#define RK_CHECK_FLOATING(t, op, name)                                                       \
  RK_CHECK(at::isFloatingType((t).scalar_type()), op, name                                  \
           " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ", \
           (t).scalar_type())

#define RK_CHECK_DTYPE(t, dtype, op, name) \
  RK_CHECK((t).scalar_type() == (dtype), op, name " must be ", dtype, ", got ", (t).scalar_type())

#define RK_CHECK_SAME_DEVICE(a, b, op, name_a, name_b)                                           \
  RK_CHECK((a).device() == (b).device(), op, name_a " and " name_b " must be on the same device, " \
           "got ", (a).device(), " and ", (b).device())

#define RK_CHECK_SAME_SHAPE(a, b, op, name_a, name_b)                                             \
  RK_CHECK((a).sizes() == (b).sizes(), op, name_a " and " name_b " must have the same shape, got ", \
           (a).sizes(), " and ", (b).sizes())
