// Torch-free CPU loop of robustkit::cw_l2_step_ for one sample, float and double.
//
// Why a separate, torch-free translation unit: compiled with torch's headers (C++20, NDEBUG) gcc 12 stops
// vectorizing loops like this one (see ensemble_temperature_ce_cpu_kernel.h); here it sees only the
// HOST_DEVICE math.
#pragma once

#include <cstdint>

#include "ops/cw_l2_step/cw_l2_step_math.h"

namespace robustkit::cw_l2_step {

// Best-so-far update and Adam step of one sample of n elements; returns ||x - x_orig||^2 of the x passed in.
float step_sample(float* w, float* x, float* m, float* v, float* best_adv, float* best_l2sq, const float* x_orig,
                  const float* loss_grad, bool success, int64_t n, const CwCoefs<float>& c);
double step_sample(double* w, double* x, double* m, double* v, double* best_adv, double* best_l2sq,
                   const double* x_orig, const double* loss_grad, bool success, int64_t n,
                   const CwCoefs<double>& c);

}  // namespace robustkit::cw_l2_step
