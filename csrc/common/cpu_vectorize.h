// RK_CPU_HOT marks CPU loops worth compiling twice: for x86-64-v3 (AVX2 + FMA) and for the baseline, with
// the right one picked when the library loads (GCC function multi-versioning). The default build flags
// target plain SSE2 so that the wheel runs everywhere; this keeps that while using the wider vectors
// where the machine has them.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define RK_CPU_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RK_CPU_HOT
#endif
