// Launchers of the CUDA kernels of robustkit::deepfool_step (torch-free: raw pointers and a stream, so the
// .cu compiles with nvcc alone). Every pointer is a dense, contiguous device buffer:
//   f [B, K], w [B, K, D], step [B, D], index [B], grad_step [B, D], grad_f [B, K], grad_w [B, K, D].
// The backward writes only the chosen candidate's entries: the caller passes zeroed grad_f and grad_w.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "ops/deepfool_step/deepfool_step_math.h"

namespace robustkit {
namespace deepfool_step {

// Candidates per sample the forward kernel holds in shared memory (one norm sum each).
constexpr int64_t kMaxCudaCandidates = 4096;

template <typename T>
void launch_deepfool_step(const T* f, const T* w, T* step, int64_t* index, int64_t B, int64_t K, int64_t D,
                          Norm norm, cudaStream_t stream);

template <typename T>
void launch_deepfool_step_backward(const T* grad_step, const T* f, const T* w, const int64_t* index, T* grad_f,
                                   T* grad_w, int64_t B, int64_t K, int64_t D, Norm norm, cudaStream_t stream);

}  // namespace deepfool_step
}  // namespace robustkit
