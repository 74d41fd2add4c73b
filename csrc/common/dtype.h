// The element types the kernels support, named without torch so the .cu files stay torch-free.
#pragma once

namespace robustkit {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace robustkit
