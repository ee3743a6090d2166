// CPU kernels built for x86-64 with AVX2, FMA and F16C (x86-64-v3); used only
// where the processor has them (see group_norm_cpu.cpp).
#ifdef GN_X86_DISPATCH
#define GN_CPU_CAPABILITY avx2
#define GN_CPU_TARGET "avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"
#define GN_VEC_BYTES 32
#include "group_norm_cpu_kernels_impl.h"

namespace gn_detection {
namespace cpu {

const KernelTable& kernels_avx2() {
  return avx2::table();
}

}  // namespace cpu
}  // namespace gn_detection
#endif
