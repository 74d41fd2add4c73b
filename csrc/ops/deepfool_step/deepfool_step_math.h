// Per-sample math of robustkit::deepfool_step, the linearisation step of DeepFool (Moosavi-Dezfooli et al.
// 2016, Eq. 8 for L2 and its L-inf form) in the differentiable form Deep Defense trains through
// (Yan et al. 2018, Eq. 2). With f_k the logit differences of the candidates and w_k their input gradients:
//   l = argmin_k |f_k| / ||w_k||_q          (q = 2 for L2, q = 1 for L-inf: the dual norm)
//   l2:   r = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l
//   linf: r = (|f_l| + 1e-4) / ||w_l||_1   * sign(w_l)
// The 1e-4 is the DeepFool reference code's push past the linearised boundary. Norms are floored at
// kMinNorm (squared: kMinNorm^2) so an all-zero gradient gives a finite step instead of inf/NaN; in the
// floored regime the floor is a constant for the backward.
// Backward (the argmin index is a constant), with g the incoming gradient of r and a = |f_l| + 1e-4:
//   l2:   s = a / n2,  d f_l = sgn(f_l) <g, w_l> / n2,  d w_l = s g - 2 s <g, w_l> / n2 * w_l
//   linf: s = a / n1,  d f_l = sgn(f_l) <g, sign w_l> / n1,  d w_l = -s <g, sign w_l> / n1 * sign(w_l)
// (the w_l terms that differentiate the norm vanish when the norm is floored).
// With D = 0 (empty gradient rows) every norm is the floor, so l = argmin_k |f_k| and the step is empty.
// Norm, kMinNorm, sign_or_zero and abs_of are in common/norm.h.
#pragma once

#include <cmath>

#include "common/host_device.h"
#include "common/norm.h"

namespace robustkit::deepfool_step {

constexpr double kOvershootPush = 1e-4;

// The argmin's decision rule, the same on both devices: candidates are visited in order k = 0, 1, ..., the
// first is taken, and a later one replaces the best only when it is strictly nearer (ties keep the lowest k)
// or when the best distance so far is NaN and this one is a number (a NaN distance loses to any number).
template <typename T>
HOST_DEVICE bool nearer(T dist, T best_dist) {
  return dist < best_dist || (best_dist != best_dist && dist == dist);
}

// The per-element term of the norm the argmin and the step use: w^2 for L2 (sum = ||w||_2^2), |w| for L-inf.
template <typename T>
HOST_DEVICE T norm_term(T w, Norm norm) {
  return norm == Norm::kL2 ? w * w : abs_of(w);
}

// The floor below which a norm sum counts as zero (kMinNorm^2 for the squared L2 norm).
template <typename T>
HOST_DEVICE T norm_floor(Norm norm) {
  return norm == Norm::kL2 ? T(kMinNorm * kMinNorm) : T(kMinNorm);
}

template <typename T>
HOST_DEVICE T floored(T norm_sum, Norm norm) {
  const T lo = norm_floor<T>(norm);
  return norm_sum > lo ? norm_sum : lo;
}

// |f_k| / ||w_k||_q from the norm sum (||w||^2 for L2, so the square root is taken here).
template <typename T>
HOST_DEVICE T boundary_distance(T f, T norm_sum, Norm norm) {
  const T n = floored(norm_sum, norm);
  return abs_of(f) / (norm == Norm::kL2 ? std::sqrt(n) : n);
}

// The step's scale s: r = s * w_l (L2) or s * sign(w_l) (L-inf).
template <typename T>
HOST_DEVICE T step_scale(T f, T norm_sum, Norm norm) {
  return (abs_of(f) + T(kOvershootPush)) / floored(norm_sum, norm);
}

template <typename T>
HOST_DEVICE T step_direction(T w, Norm norm) {
  return norm == Norm::kL2 ? w : sign_or_zero(w);
}

// <g, direction> is the per-sample reduction of the backward; these map it to the two gradients.
template <typename T>
HOST_DEVICE T grad_f_value(T f, T norm_sum, T g_dot_dir, Norm norm) {
  return sign_or_zero(f) * g_dot_dir / floored(norm_sum, norm);
}

// Coefficient c of the norm's derivative: d w_l = [s g (L2 only)] + c * direction(w_l).
template <typename T>
HOST_DEVICE T grad_w_norm_coef(T scale, T norm_sum, T g_dot_dir, Norm norm) {
  if (!(norm_sum > norm_floor<T>(norm))) return T(0);
  return (norm == Norm::kL2 ? T(-2) : T(-1)) * scale * g_dot_dir / norm_sum;
}

template <typename T>
HOST_DEVICE T grad_w_value(T g, T w, T scale, T coef, Norm norm) {
  return norm == Norm::kL2 ? scale * g + coef * w : coef * sign_or_zero(w);
}

}  // namespace robustkit::deepfool_step
