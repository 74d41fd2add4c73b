// robustkit::conv2d_input_grad: the input gradient of a stride-1, dilation-1, ungrouped 2-D convolution,
//   grad_input[b, ci, y, x] = sum_{co, u, v} grad_output[b, co, y + ph - u, x + pw - v] * weight[co, ci, u, v]
// over the (y + ph - u, x + pw - v) inside grad_output's [OH, OW] plane, OH = H + 2 ph - KH + 1.
// input_grad_at below (the gather form) is what the CUDA kernel computes per input pixel. The CPU kernels compute
// the same sum differently, for speed: float32 as a gather over a zero-bordered copy of grad_output (no bounds
// checks, 32-pixel register chunks), float64 as a scatter into a padded accumulation plane. So that the CPU tests
// still exercise the math the GPU runs, the test-only op robustkit::_conv2d_input_grad_math runs input_grad_at
// on the host (conv2d_input_grad_cpu.cpp), and tests/ops compares it with the reference.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace robustkit::conv2d_input_grad {

struct Shape {
  int64_t B, CI, H, W;    // grad_input
  int64_t CO, OH, OW;     // grad_output
  int64_t KH, KW, PH, PW; // kernel and padding
};

// grad_input at (b, ci, y, x); acc is the accumulation type (float for float, double for double).
template <typename T, typename Acc>
HOST_DEVICE Acc input_grad_at(const T* grad_output, const T* weight, const Shape& s, int64_t b, int64_t ci,
                              int64_t y, int64_t x) {
  Acc sum = Acc(0);
  for (int64_t co = 0; co < s.CO; ++co) {
    const T* g = grad_output + (b * s.CO + co) * s.OH * s.OW;
    const T* w = weight + (co * s.CI + ci) * s.KH * s.KW;
    for (int64_t u = 0; u < s.KH; ++u) {
      const int64_t oy = y + s.PH - u;
      if (oy < 0 || oy >= s.OH) continue;
      for (int64_t v = 0; v < s.KW; ++v) {
        const int64_t ox = x + s.PW - v;
        if (ox < 0 || ox >= s.OW) continue;
        sum += Acc(g[oy * s.OW + ox]) * Acc(w[u * s.KW + v]);
      }
    }
  }
  return sum;
}

}  // namespace robustkit::conv2d_input_grad
