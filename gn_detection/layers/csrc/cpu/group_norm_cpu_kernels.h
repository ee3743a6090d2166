// Interface between the ATen-facing CPU code (group_norm_cpu.cpp) and the CPU
// kernels, which are compiled once per x86 instruction set (kernels_*.cpp) and
// picked at run time, as ATen does with its CPU_CAPABILITY builds. The kernels
// see raw pointers and sizes only, so their translation units stay small.
#pragma once

#include <cstdint>

namespace gn_detection {
namespace cpu {

// Input and parameter dtypes the kernels are instantiated for.
enum class DtypeCombo : int {
  kFloat = 0,            // float input, float parameters
  kDouble,               // double input, double parameters
  kHalf,                 // half input, half parameters
  kHalfFloatParams,      // half input, float parameters
  kBFloat16,             // bfloat16 input, bfloat16 parameters
  kBFloat16FloatParams,  // bfloat16 input, float parameters
  kCount
};

// Memory of x and y is (N, C, HxW) when !channels_last, (N, HxW, C) otherwise.
// gamma/beta may be null (1 and 0). mean/rstd are (N, G) in the accumulation
// type (double for kDouble, else float).
struct ForwardArgs {
  const void* x;
  const void* gamma;
  const void* beta;
  void* y;
  void* mean;
  void* rstd;
  int64_t N;
  int64_t C;
  int64_t HxW;
  int64_t G;
  double eps;
  bool relu;
  bool channels_last;
};

// dx has x's layout; dgamma/dbeta are (C,) in the parameter type and are always
// written (gamma treated as 1 and beta as 0 when null).
struct BackwardArgs {
  const void* dy;
  const void* x;
  const void* mean;
  const void* rstd;
  const void* gamma;
  const void* beta;
  void* dx;
  void* dgamma;
  void* dbeta;
  int64_t N;
  int64_t C;
  int64_t HxW;
  int64_t G;
  bool relu;
  bool channels_last;
};

using ForwardKernel = void (*)(const ForwardArgs&);
using BackwardKernel = void (*)(const BackwardArgs&);

struct KernelTable {
  ForwardKernel forward[static_cast<int>(DtypeCombo::kCount)];
  BackwardKernel backward[static_cast<int>(DtypeCombo::kCount)];
};

// One table per build of the kernels; the AVX2 and AVX-512 tables exist on x86
// only and must be used only where the processor supports them.
const KernelTable& kernels_baseline();
#ifdef GN_X86_DISPATCH
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#endif

}  // namespace cpu
}  // namespace gn_detection
