// The grain of at::parallel_for in the CPU kernels: enough items per task that a task does about
// `work_per_task` units of work (elements read, or multiply-adds), so small calls run inline instead of paying
// a thread hand-off, which on a busy machine costs far more than the work.
#pragma once

#include <algorithm>
#include <cstdint>

namespace robustkit {

constexpr int64_t kWorkPerTask = int64_t{1} << 16;

inline int64_t items_per_task(int64_t work_per_item, int64_t work_per_task = kWorkPerTask) {
  return std::max<int64_t>(1, work_per_task / std::max<int64_t>(1, work_per_item));
}

}  // namespace robustkit
