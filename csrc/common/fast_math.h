// Exponential shared by the CPU and CUDA kernels.
//
// Why a polynomial on the CPU: the extension cannot reach ATen's vectorized Sleef exp, and glibc's scalar
// expf stops gcc from vectorizing the loops that dominate the fused ops. This branch-free Cephes-style
// expf (relative error < 2 ulp on the range used here) vectorizes under -O3. float64 inputs use std::exp,
// because gradcheck needs double precision end to end.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace robustkit {

HOST_DEVICE float exp_acc(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  // Arguments here are <= 0 (shifted by the row max); clamp the low end so 2^n stays a normal float.
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // Round to nearest by adding and subtracting 1.5 * 2^23: unlike floorf, this vectorizes on plain SSE2.
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
#endif
}

HOST_DEVICE double exp_acc(double x) { return exp(x); }

HOST_DEVICE float log_acc(float x) { return logf(x); }
HOST_DEVICE float log1p_acc(float x) { return log1pf(x); }
HOST_DEVICE double log1p_acc(double x) { return log1p(x); }
HOST_DEVICE double log_acc(double x) { return log(x); }

}  // namespace robustkit
