// robustkit._C: defines the `robustkit` op library and a thin pybind11 module that reports how it was built.
// Each op's schema sits beside its kernels, in csrc/ops/<op>/<op>_cpu.cpp (TORCH_LIBRARY_FRAGMENT), and its
// backend kernels register there and in <op>_cuda.cpp (TORCH_LIBRARY_IMPL); fake kernels and autograd
// formulas are registered from Python (robustkit/ops/<op>.py).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(robustkit, m) {}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "robustkit fused kernels (ops are under torch.ops.robustkit)";
#ifdef ROBUSTKIT_WITH_CUDA
  module.attr("with_cuda") = true;
#else
  module.attr("with_cuda") = false;
#endif
  module.attr("torch_version") = ROBUSTKIT_TORCH_VERSION;
}
