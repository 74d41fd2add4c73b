// Per-element math of robustkit::cw_l2_step_, one Adam step of the Carlini-Wagner L2 attack (Carlini & Wagner
// 2017, Sec. V.A) in the tanh space w, with the box [lo, hi]:
//   x(w)  = lo + (hi - lo) * (tanh(w) + 1) / 2 = lo + (hi - lo) * sigmoid(2 w)
//   loss  = ||x - x_orig||_2^2 + c * f(x)          (the caller passes d(c f)/dx as loss_grad)
//   dL/dw = (2 (x - x_orig) + loss_grad) * dx/dw,   dx/dw = 2 (x - lo) (hi - x) / (hi - lo)
//   Adam (Kingma & Ba 2015, Alg. 1): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
//                                    w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + adam_eps)
// dx/dw is taken from x rather than from tanh(w), so a step evaluates one exponential per element (the new x).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/fast_math.h"
#include "common/host_device.h"

namespace robustkit::cw_l2_step {

// Every coefficient of one step, the one struct both devices use. Each is the exact (double) value rounded once
// to T: 1 - beta too, rather than 1 - T(beta). In float32, 1 - float32(0.9999) is 1.00017e-4, 1.7e-4 away from
// the 1e-4 the bias correction 1 - beta^t assumes; mixing the two put Adam's step off by up to 8e-5 relative.
template <typename T>
struct CwCoefs {
  T lo, hi, lr, beta1, beta2, one_minus_beta1, one_minus_beta2, adam_eps;
  T inv_bc1, inv_sqrt_bc2;  // 1 / (1 - beta1^t) and 1 / sqrt(1 - beta2^t)
};

template <typename T>
inline CwCoefs<T> make_coefs(double lo, double hi, double lr, double beta1, double beta2, double adam_eps,
                             int64_t step) {
  const double t = static_cast<double>(step);
  return CwCoefs<T>{T(lo), T(hi), T(lr), T(beta1), T(beta2), T(1.0 - beta1), T(1.0 - beta2), T(adam_eps),
                    T(1.0 / (1.0 - std::pow(beta1, t))), T(1.0 / std::sqrt(1.0 - std::pow(beta2, t)))};
}

// The best-so-far rule: an iterate replaces the best when it is adversarial and strictly nearer. A NaN
// distance never replaces it.
template <typename T>
HOST_DEVICE bool improves(bool success, T l2sq, T best_l2sq) {
  return success && l2sq < best_l2sq;
}

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
                          T beta2, T one_minus_beta1, T one_minus_beta2, T adam_eps, T inv_bias_correction1,
                          T inv_sqrt_bias_correction2) {
  const T g = (T(2) * (x - x_orig) + loss_grad) * dx_dw(x, lo, hi);
  const T m = beta1 * exp_avg + one_minus_beta1 * g;
  const T v = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
  exp_avg = m;
  exp_avg_sq = v;
  w = w - lr * (m * inv_bias_correction1) / (std::sqrt(v) * inv_sqrt_bias_correction2 + adam_eps);
  return box_from_w(w, lo, hi);
}

}  // namespace robustkit::cw_l2_step
