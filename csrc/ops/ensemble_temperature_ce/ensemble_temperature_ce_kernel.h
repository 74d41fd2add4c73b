// Torch-free launchers of the ensemble temperature cross-entropy CUDA kernels (ensemble_temperature_ce_kernel.cu).
// Pointers are device pointers to contiguous tensors: logits/grad [K, B, C], target [B] int64,
// loss/grad_loss [B] in the logits' type, row_stats [5, K, B] in the accumulation type (double for
// float64 logits, float otherwise).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace robustkit::ensemble_temperature_ce {

cudaError_t launch_forward(DType dtype, const void* logits, const int64_t* target, void* loss, void* row_stats,
                           int64_t num_models, int64_t batch, int64_t num_classes, double temperature,
                           double soft_weight, double hard_weight, cudaStream_t stream);

cudaError_t launch_backward(DType dtype, const void* grad_loss, const void* logits, const int64_t* target,
                            const void* row_stats, void* grad_logits, int64_t num_models, int64_t batch,
                            int64_t num_classes, double temperature, double soft_weight, double hard_weight,
                            cudaStream_t stream);

}  // namespace robustkit::ensemble_temperature_ce
