// CPU kernels of robustkit::conv2d_input_grad. float: a gather with register accumulators (below, one task per
// sample). double, and the reference for how the sum is laid out: a scatter, one task per (sample, input
// channel) plane, that zeroes a padded accumulation plane [H + 2 ph, W + 2 pw], adds every grad_output plane
// into it once per kernel tap (a row-wise axpy without bounds checks) and copies the interior out. The scatter
// reads and writes the plane on every multiply-add; the gather measured 1.9 ms against 3.4 ms for it on the
// MNIST LeNet's first layer at 256 images (oneDNN: 10 ms).
// Why it exists: oneDNN's input gradient for convolutions with few input channels (a network's first layer:
// 1 channel for MNIST, 3 for RGB) runs 2-5x slower than this; see bench/conv_input_grad.py.
// No torch-free *_cpu_kernel.cpp here: the float gather is written with explicit vector types, so it does not
// depend on gcc auto-vectorizing beside torch's headers (the reason the CE and C&W loops are split out).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/cpu_vectorize.h"
#include "common/parallel.h"
#include "ops/conv2d_input_grad/conv2d_input_grad.h"

// The op's schema, beside its kernels (in the CPU file, which every build compiles).
TORCH_LIBRARY_FRAGMENT(robustkit, m) {
  // Input gradient of a stride-1, ungrouped conv2d [B, C_in, H, W]; see robustkit/ops/conv2d_input_grad.py.
  m.def("conv2d_input_grad(Tensor grad_output, Tensor weight, int[] input_size, int[] padding) -> Tensor");
  // Test-only, CPU only: the same result through input_grad_at, the CUDA kernel's per-pixel math.
  m.def("_conv2d_input_grad_math(Tensor grad_output, Tensor weight, int[] input_size, int[] padding) -> Tensor");
}

namespace robustkit::conv2d_input_grad {
namespace {

template <typename T>
RK_CPU_HOT void plane(const T* grad_output, const T* weight, const Shape& s, int64_t b, int64_t ci, T* acc,
                      T* out) {
  const int64_t acc_w = s.W + 2 * s.PW, acc_h = s.H + 2 * s.PH;
  std::fill(acc, acc + acc_h * acc_w, T(0));
  for (int64_t co = 0; co < s.CO; ++co) {
    const T* g = grad_output + (b * s.CO + co) * s.OH * s.OW;
    const T* w = weight + (co * s.CI + ci) * s.KH * s.KW;
    for (int64_t u = 0; u < s.KH; ++u) {
      for (int64_t v = 0; v < s.KW; ++v) {
        const T wv = w[u * s.KW + v];
        for (int64_t oy = 0; oy < s.OH; ++oy) {
          // padded input row oy + u, columns v .. v + OW: the taps of output row oy at kernel offset (u, v)
          T* row = acc + (oy + u) * acc_w + v;
          const T* grow = g + oy * s.OW;
#pragma omp simd
          for (int64_t ox = 0; ox < s.OW; ++ox) row[ox] += grow[ox] * wv;
        }
      }
    }
  }
  for (int64_t y = 0; y < s.H; ++y) {
    const T* src = acc + (y + s.PH) * acc_w + s.PW;
    std::copy(src, src + s.W, out + y * s.W);
  }
}

// float: gather form with register accumulators. One task per sample: the sample's grad_output planes are copied
// once into a zero-bordered buffer (no tap then needs a bounds check), and each input row is computed in chunks
// of 32 pixels held in four 8-float vectors (four independent FMA chains): per kernel tap, four unaligned loads
// of the shifted row, one broadcast weight and four multiply-adds, and no load or store of the sums. GCC's
// vector extensions compile to AVX2 in the x86-64-v3 clone of RK_CPU_HOT and to SSE pairs otherwise.
typedef float Float8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8, kVectors = 4, kChunk = kLanes * kVectors;

struct Padded {
  int64_t rows, cols;  // padded[co][r][c] = g[co][r - (KH - 1) + PH][c - (KW - 1) + PW], zero outside g
};

inline Padded padded_shape(const Shape& s) { return {s.H + s.KH - 1, s.W + s.KW - 1 + kChunk}; }

void fill_padded(const float* g, const Shape& s, const Padded& p, float* out) {
  std::fill(out, out + s.CO * p.rows * p.cols, 0.0f);
  const int64_t c0 = std::max<int64_t>(0, s.KW - 1 - s.PW);
  const int64_t c1 = std::min<int64_t>(p.cols, s.OW + s.KW - 1 - s.PW);
  for (int64_t co = 0; co < s.CO; ++co) {
    for (int64_t r = 0; r < p.rows; ++r) {
      const int64_t oy = r - (s.KH - 1) + s.PH;
      if (oy < 0 || oy >= s.OH || c0 >= c1) continue;
      const float* src = g + (co * s.OH + oy) * s.OW + (c0 - (s.KW - 1) + s.PW);
      std::copy(src, src + (c1 - c0), out + (co * p.rows + r) * p.cols + c0);
    }
  }
}

inline Float8 load8(const float* p) {
  Float8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// grad_input[ci][y][x0 .. x0 + kChunk) of one sample into out (kChunk floats).
RK_CPU_HOT void gather_chunk(const float* padded, const Padded& p, const float* weight, const Shape& s, int64_t ci,
                             int64_t y, int64_t x0, float* out) {
  Float8 acc[kVectors] = {};
  for (int64_t co = 0; co < s.CO; ++co) {
    const float* w = weight + (co * s.CI + ci) * s.KH * s.KW;
    const float* plane = padded + co * p.rows * p.cols;
    for (int64_t u = 0; u < s.KH; ++u) {
      const float* row = plane + (y + s.KH - 1 - u) * p.cols + x0 + s.KW - 1;
      for (int64_t v = 0; v < s.KW; ++v) {
        const float wv = w[u * s.KW + v];
        const Float8 wb = {wv, wv, wv, wv, wv, wv, wv, wv};
        const float* src = row - v;
        for (int64_t k = 0; k < kVectors; ++k) acc[k] += load8(src + k * kLanes) * wb;
      }
    }
  }
  __builtin_memcpy(out, acc, sizeof(acc));
}

void gather_sample(const float* g, const float* weight, const Shape& s, float* padded, float* out) {
  const Padded p = padded_shape(s);
  fill_padded(g, s, p, padded);
  float tail[kChunk];
  for (int64_t ci = 0; ci < s.CI; ++ci) {
    for (int64_t y = 0; y < s.H; ++y) {
      float* out_row = out + (ci * s.H + y) * s.W;
      int64_t x0 = 0;
      for (; x0 + kChunk <= s.W; x0 += kChunk) gather_chunk(padded, p, weight, s, ci, y, x0, out_row + x0);
      if (x0 < s.W) {
        gather_chunk(padded, p, weight, s, ci, y, x0, tail);
        std::copy(tail, tail + (s.W - x0), out_row + x0);
      }
    }
  }
}

// at::parallel_for's grain: tasks of ~256k multiply-adds (common/parallel.h).
constexpr int64_t kMultiplyAddsPerTask = int64_t{1} << 18;

int64_t grain_for(int64_t multiply_adds_per_item) { return items_per_task(multiply_adds_per_item, kMultiplyAddsPerTask); }

void gather_all(const at::Tensor& g, const at::Tensor& w, const Shape& s, at::Tensor& out) {
  const Padded p = padded_shape(s);
  const float* gp = g.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, s.B, grain_for(s.CI * s.CO * s.KH * s.KW * s.H * s.W), [&](int64_t b0, int64_t b1) {
    std::vector<float> padded(s.CO * p.rows * p.cols);
    for (int64_t b = b0; b < b1; ++b) {
      gather_sample(gp + b * s.CO * s.OH * s.OW, wp, s, padded.data(), op + b * s.CI * s.H * s.W);
    }
  });
}

void scatter_all(const at::Tensor& g, const at::Tensor& w, const Shape& s, at::Tensor& out) {
  const double* gp = g.data_ptr<double>();
  const double* wp = w.data_ptr<double>();
  double* op = out.data_ptr<double>();
  at::parallel_for(0, s.B * s.CI, grain_for(s.CO * s.KH * s.KW * s.OH * s.OW), [&](int64_t p0, int64_t p1) {
    std::vector<double> acc((s.H + 2 * s.PH) * (s.W + 2 * s.PW));
    for (int64_t p = p0; p < p1; ++p) plane(gp, wp, s, p / s.CI, p % s.CI, acc.data(), op + p * s.H * s.W);
  });
}

at::Tensor conv2d_input_grad_cpu(const at::Tensor& grad_output_in, const at::Tensor& weight_in,
                                 at::IntArrayRef input_size, at::IntArrayRef padding) {
  const Shape s = check_args(grad_output_in, weight_in, input_size, padding);  // float32 or float64
  const at::Tensor g = grad_output_in.contiguous(), w = weight_in.contiguous();
  at::Tensor out = at::empty({s.B, s.CI, s.H, s.W}, g.options());
  if (out.numel() == 0) return out;
  if (s.CO == 0) return out.zero_();
  if (g.scalar_type() == at::kFloat) {
    gather_all(g, w, s, out);
  } else {
    scatter_all(g, w, s, out);
  }
  return out;
}

// Test-only: the CUDA kernel's per-pixel math (input_grad_at) run on the host, one task per sample, so the CPU
// tests check the sum the GPU computes (the fast CPU paths above are different implementations of it).
at::Tensor conv2d_input_grad_math_cpu(const at::Tensor& grad_output_in, const at::Tensor& weight_in,
                                      at::IntArrayRef input_size, at::IntArrayRef padding) {
  const Shape s = check_args(grad_output_in, weight_in, input_size, padding);
  const at::Tensor g = grad_output_in.contiguous(), w = weight_in.contiguous();
  at::Tensor out = at::empty({s.B, s.CI, s.H, s.W}, g.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "_conv2d_input_grad_math", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, s.B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t ci = 0; ci < s.CI; ++ci) {
          for (int64_t y = 0; y < s.H; ++y) {
            for (int64_t x = 0; x < s.W; ++x) {
              op[((b * s.CI + ci) * s.H + y) * s.W + x] =
                  scalar_t(input_grad_at<scalar_t, scalar_t>(gp, wp, s, b, ci, y, x));
            }
          }
        }
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace robustkit::conv2d_input_grad

TORCH_LIBRARY_IMPL(robustkit, CPU, m) {
  m.impl("conv2d_input_grad", &robustkit::conv2d_input_grad::conv2d_input_grad_cpu);
  m.impl("_conv2d_input_grad_math", &robustkit::conv2d_input_grad::conv2d_input_grad_math_cpu);
}
