// Per-element math of robustkit::cw_l2_step_, one Adam step of the Carlini-Wagner L2 attack (Carlini & Wagner
// 2017, Sec. V.A) in the tanh space w, with the box [lo, hi]:
//   x(w)  = lo + (hi - lo) * (tanh(w) + 1) / 2 = lo + (hi - lo) * sigmoid(2 w)
//   loss  = ||x - x_orig||_2^2 + c * f(x)          (the caller passes d(c f)/dx as loss_grad)
//   dL/dw = (2 (x - x_orig) + loss_grad) * dx/dw,   dx/dw = 2 (x - lo) (hi - x) / (hi - lo)
//   Adam (Kingma & Ba 2015, Alg. 1): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
//                                    w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// dx/dw is taken from x rather than from tanh(w), so a step evaluates one exponential per element (the new x).
#pragma once

#include <cmath>

#include "common/fast_math.h"
#include "common/host_device.h"

namespace robustkit {
namespace cw_step {

template <typename T>
HOST_DEVICE T box_from_w(T w, T lo, T hi) {
  return lo + (hi - lo) / (T(1) + exp_acc(T(-2) * w));
}

template <typename T>
HOST_DEVICE T dx_dw(T x, T lo, T hi) {
  return T(2) * (x - lo) * (hi - x) / (hi - lo);
}

// The per-element update: advances exp_avg, exp_avg_sq and w, and returns the new x.
template <typename T>
HOST_DEVICE T adam_update(T& w, T& exp_avg, T& exp_avg_sq, T x, T x_orig, T loss_grad, T lo, T hi, T lr, T beta1,
                          T beta2, T eps, T inv_bias_correction1, T inv_sqrt_bias_correction2) {
  const T g = (T(2) * (x - x_orig) + loss_grad) * dx_dw(x, lo, hi);
  const T m = beta1 * exp_avg + (T(1) - beta1) * g;
  const T v = beta2 * exp_avg_sq + (T(1) - beta2) * g * g;
  exp_avg = m;
  exp_avg_sq = v;
  w = w - lr * (m * inv_bias_correction1) / (std::sqrt(v) * inv_sqrt_bias_correction2 + eps);
  return box_from_w(w, lo, hi);
}

}  // namespace cw_step
}  // namespace robustkit
