// Launchers of the CUDA kernels of robustkit::deepfool_step (torch-free: untyped device pointers, a DType and a
// stream, so the .cu compiles with nvcc alone). Every pointer is a dense, contiguous device buffer:
//   f [B, K], w [B, K, D], step [B, D], index [B], grad_step [B, D], grad_f [B, K], grad_w [B, K, D].
// One block per sample on gridDim.x (up to 2^31 - 1 samples). The backward writes only the chosen candidate's
// entries: the caller passes zeroed grad_f and grad_w, and indices already checked to lie in [0, K).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "common/norm.h"

namespace robustkit::deepfool_step {

// Candidates per sample the forward kernel holds in shared memory (one norm sum each).
constexpr int64_t kMaxCudaCandidates = 4096;

struct DeepFoolLaunch {
  DType dtype;  // kFloat32 or kFloat64
  const void* f;
  const void* w;
  void* step;
  int64_t* index;
  int64_t batch, candidates, dim;
  Norm norm;
};

struct DeepFoolBackwardLaunch {
  DType dtype;
  const void* grad_step;
  const void* f;
  const void* w;
  const int64_t* index;
  void* grad_f;
  void* grad_w;
  int64_t batch, candidates, dim;
  Norm norm;
};

cudaError_t launch_deepfool_step(const DeepFoolLaunch& args, cudaStream_t stream);
cudaError_t launch_deepfool_step_backward(const DeepFoolBackwardLaunch& args, cudaStream_t stream);

}  // namespace robustkit::deepfool_step
