// The norm an op measures perturbations in, and the small helpers every op shares around it. Torch-free, so
// both the .cu kernels and the CPU kernels include it; the string parser is in checks.h (torch glue only).
#pragma once

#include "common/host_device.h"

namespace robustkit {

enum class Norm : int { kLinf = 0, kL2 = 1 };

// Smallest norm an op divides by: an all-zero gradient then gives a zero (or finite) step instead of NaN.
constexpr double kMinNorm = 1e-12;

// sign(v) with sign(0) = 0; NaN compares false both ways, so a NaN direction gives 0.
template <typename T>
HOST_DEVICE T sign_or_zero(T v) {
  return static_cast<T>((v > T(0)) - (v < T(0)));
}

template <typename T>
HOST_DEVICE T abs_of(T v) {
  return v < T(0) ? -v : v;
}

}  // namespace robustkit
