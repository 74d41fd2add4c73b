// robustkit._C: the op schemas (TORCH_LIBRARY) and a thin pybind11 module that reports how it was built.
// Backend kernels register themselves in csrc/ops/<op>/<op>_{cpu,cuda}.cpp with TORCH_LIBRARY_IMPL;
// fake kernels and autograd formulas are registered from Python (robustkit/ops/).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(robustkit, m) {
  // Per-sample loss [B] and the row stats [5, K, B] the backward needs (max; log-sums at T and at 1, over all
  // classes and over the classes other than the target; see csrc/ops/ensemble_ce/ensemble_ce_math.h).
  m.def("ensemble_temperature_ce(Tensor logits, Tensor target, float temperature, float soft_weight, "
        "float hard_weight) -> (Tensor, Tensor)");
  m.def("_ensemble_temperature_ce_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor row_stats, "
        "float temperature, float soft_weight, float hard_weight) -> Tensor");
  // Updates x_adv and momentum in place; see robustkit/ops/sign_step.py for the semantics.
  m.def("sign_momentum_step_(Tensor(a!) x_adv, Tensor x_orig, Tensor grad, Tensor(b!)? momentum, "
        "Tensor? step_size_per_sample, Tensor? eps_per_sample, float step_size, float eps, float decay, "
        "str grad_norm, str norm, float clip_min, float clip_max) -> ()");
  // DeepFool linearisation step: (step [B, D], chosen candidate [B]); see robustkit/ops/deepfool_step.py.
  m.def("deepfool_step(Tensor f, Tensor w, str norm) -> (Tensor, Tensor)");
  m.def("_deepfool_step_backward(Tensor grad_step, Tensor f, Tensor w, Tensor index, str norm) -> (Tensor, Tensor)");
  // One C&W L2 Adam step in tanh space, in place; returns ||x - x_orig||_2^2 [B]; see robustkit/ops/cw_step.py.
  m.def("cw_l2_step_(Tensor(a!) w, Tensor(b!) x, Tensor(c!) exp_avg, Tensor(d!) exp_avg_sq, Tensor(e!) best_adv, "
        "Tensor(f!) best_l2sq, Tensor x_orig, Tensor loss_grad, Tensor success, int step, float lr, float beta1, "
        "float beta2, float eps, float clip_min, float clip_max) -> Tensor");
  // Input gradient of a stride-1, ungrouped conv2d [B, C_in, H, W]; see robustkit/ops/conv_input_grad.py.
  m.def("conv2d_input_grad(Tensor grad_output, Tensor weight, int[] input_size, int[] padding) -> Tensor");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "robustkit fused kernels (ops are under torch.ops.robustkit)";
#ifdef ROBUSTKIT_WITH_CUDA
  module.attr("with_cuda") = true;
#else
  module.attr("with_cuda") = false;
#endif
  module.attr("torch_version") = ROBUSTKIT_TORCH_VERSION;
}
