// Per-element math of robustkit::sign_momentum_step_ (MI-FGSM, Dong et al. 2018, Eq. 6-7; I-FGSM and PGD
// are decay = 0 without gradient normalisation):
//   g <- decay * g + grad / ||grad||_1            (per sample; "none" skips the division)
//   linf: x <- clip(project_inf(x + step * sign(g)))
//   l2:   x <- clip(project_2(x + step * g / ||g||_2))
// The per-sample norms come from reductions the kernels do first; these helpers take them as inputs.
// Norm, kMinNorm and sign_or_zero (a NaN direction gives no step) are in common/norm.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"
#include "common/norm.h"

namespace robustkit::sign_momentum_step {

enum class GradNorm : int { kNone = 0, kL1 = 1 };

// Squared norms are summed in double, also for float32 tensors: a float32 sum of squares overflows once the
// gradient's entries reach ~1e19, and inverse_norm(inf) = 0 would silently make the step zero.
using SquareSum = double;

template <typename T>
HOST_DEVICE T clamp_to(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// 1 / max(norm, kMinNorm); a NaN norm stays NaN so that a NaN gradient cannot turn into a huge step.
template <typename T>
HOST_DEVICE T inverse_norm(T norm) {
  return norm > T(kMinNorm) ? T(1) / norm : (norm == norm ? T(1) / T(kMinNorm) : norm);
}

template <typename T>
HOST_DEVICE T momentum_update(T momentum, T grad, T decay, T inv_grad_norm) {
  return decay * momentum + grad * inv_grad_norm;
}

template <typename T> struct SameSizeInt;
template <> struct SameSizeInt<float> { using type = int32_t; };
template <> struct SameSizeInt<double> { using type = int64_t; };

// The largest representable value below v (finite v), by stepping its bit pattern: branch-free enough to
// vectorize, unlike std::nextafter.
template <typename T>
HOST_DEVICE T next_down(T v) {
  using I = typename SameSizeInt<T>::type;
  I bits;
  memcpy(&bits, &v, sizeof(T));
  bits += v > T(0) ? I(-1) : I(1);
  if (v == T(0)) bits = I(1) | (I(1) << (8 * sizeof(T) - 1));  // -0 + 1: the smallest negative denormal
  memcpy(&v, &bits, sizeof(T));
  return v;
}

template <typename T>
HOST_DEVICE T next_up(T v) {
  return -next_down(-v);
}

// The eps-ball's bounds, pulled in by one ulp where x_orig +- eps rounded outward, so that |x - x_orig|
// computed in T never exceeds eps (in T) for any x between them: the constraint holds exactly.
template <typename T>
HOST_DEVICE T ball_upper(T x_orig, T eps) {
  const T hi = x_orig + eps;
  return hi - x_orig > eps ? next_down(hi) : hi;
}

template <typename T>
HOST_DEVICE T ball_lower(T x_orig, T eps) {
  const T lo = x_orig - eps;
  return x_orig - lo > eps ? next_up(lo) : lo;
}

// One L-inf step: move by step * sign(g), then back into the eps-ball around x_orig and into the box.
template <typename T>
HOST_DEVICE T linf_step(T x, T x_orig, T g, T step, T eps, T clip_min, T clip_max) {
  const T moved = x + step * sign_or_zero(g);
  return clamp_to(clamp_to(moved, ball_lower(x_orig, eps), ball_upper(x_orig, eps)), clip_min, clip_max);
}

// The unprojected L2 move; a NaN increment (from a NaN gradient) becomes no move.
template <typename T>
HOST_DEVICE T l2_move(T x, T g, T step_over_gnorm) {
  const T inc = step_over_gnorm * g;
  return x + (inc == inc ? inc : T(0));
}

// L2 projection factor min(1, eps / ||delta||_2), then the box.
template <typename T>
HOST_DEVICE T l2_project(T x_moved, T x_orig, T factor, T clip_min, T clip_max) {
  return clamp_to(x_orig + (x_moved - x_orig) * factor, clip_min, clip_max);
}

template <typename T>
HOST_DEVICE T l2_factor(T delta_norm, T eps) {
  return delta_norm > eps ? eps / delta_norm : T(1);
}

}  // namespace robustkit::sign_momentum_step
