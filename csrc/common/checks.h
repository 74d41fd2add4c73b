// Argument checks whose messages name the argument and what was expected, e.g.
//   "ensemble_temperature_ce: logits must be a 3-D [K, B, C] tensor, got shape [3, 7]".
// dtypes are printed by their torch names (float32, int64), as the Python user writes them.
// Torch-only: used by the *_cpu.cpp and *_cuda.cpp glue, never by the .cu kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "common/norm.h"

namespace robustkit {

inline std::string_view dtype_name(at::ScalarType t) { return c10::getDtypeNames(t).first; }

}  // namespace robustkit

#define RK_CHECK(cond, op, ...) TORCH_CHECK(cond, op, ": ", __VA_ARGS__)

#define RK_CHECK_DIM(t, n, op, name, layout)                                                    \
  RK_CHECK((t).dim() == (n), op, name " must be a " #n "-D " layout " tensor, got shape ", \
           (t).sizes())

#define RK_CHECK_FLOATING(t, op, name)                                                       \
  RK_CHECK(at::isFloatingType((t).scalar_type()), op, name                                  \
           " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ", \
           ::robustkit::dtype_name((t).scalar_type()))

#define RK_CHECK_DTYPE(t, dtype, op, name)                                                       \
  RK_CHECK((t).scalar_type() == (dtype), op, name " must be ", ::robustkit::dtype_name(dtype), \
           ", got ", ::robustkit::dtype_name((t).scalar_type()))

#define RK_CHECK_SAME_DEVICE(a, b, op, name_a, name_b)                                           \
  RK_CHECK((a).device() == (b).device(), op, name_a " and " name_b " must be on the same device, " \
           "got ", (a).device(), " and ", (b).device())

#define RK_CHECK_SAME_SHAPE(a, b, op, name_a, name_b)                                             \
  RK_CHECK((a).sizes() == (b).sizes(), op, name_a " and " name_b " must have the same shape, got ", \
           (a).sizes(), " and ", (b).sizes())

namespace robustkit {

inline Norm parse_norm(const char* op, std::string_view s) {
  if (s == "linf") return Norm::kLinf;
  if (s == "l2") return Norm::kL2;
  TORCH_CHECK(false, op, ": norm must be \"linf\" or \"l2\", got \"", std::string(s), "\"");
}

// Every int64 index an op reads memory with lies in [0, size), checked on the host before any kernel runs, so
// an out-of-range index is the same error on every device. On CUDA this copies the [B] index tensor to the
// host (one synchronisation, a few hundred bytes).
inline void check_index_range(const at::Tensor& index, int64_t size, const char* op, const char* name) {
  if (index.numel() == 0) return;
  const at::Tensor host = index.is_cpu() ? index.contiguous() : index.to(at::kCPU).contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < host.numel(); ++i) {
    RK_CHECK(p[i] >= 0 && p[i] < size, op, name, "[", i, "] = ", p[i], " is out of range [0, ", size, ")");
  }
}

using NamedTensor = std::pair<const char*, const at::Tensor*>;

// The buffers an op updates in place are distinct memory: none overlaps itself (an expanded tensor), another
// updated buffer, or an input (the kernels read and write them as separate, __restrict__ arrays; passing x_adv
// as x_orig, say, would silently move the ball's centre). Undefined (absent optional) tensors are skipped.
inline void check_no_overlap(const char* op, std::initializer_list<NamedTensor> updated,
                             std::initializer_list<NamedTensor> inputs) {
  for (auto a = updated.begin(); a != updated.end(); ++a) {
    if (!a->second->defined()) continue;
    RK_CHECK(at::has_internal_overlap(*a->second) != at::MemOverlap::Yes, op, a->first,
             " is updated in place and must not have overlapping memory (e.g. an expanded tensor); pass a "
             "clone");
    auto check_pair = [&](const NamedTensor& b) {
      if (!b.second->defined()) return;
      const at::MemOverlapStatus s = at::get_overlap_status(*a->second, *b.second);
      RK_CHECK(s != at::MemOverlapStatus::Full && s != at::MemOverlapStatus::Partial, op, a->first, " and ",
               b.first, " must not share memory (", a->first, " is updated in place); pass a clone");
    };
    for (auto b = a + 1; b != updated.end(); ++b) check_pair(*b);
    for (const NamedTensor& b : inputs) check_pair(b);
  }
}

}  // namespace robustkit
