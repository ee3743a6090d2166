// CPU kernels built for x86-64 with AVX-512 F/BW/DQ/VL (x86-64-v4); used only
// where the processor has them (see group_norm_cpu.cpp).
#ifdef GN_X86_DISPATCH
#define GN_CPU_CAPABILITY avx512
#define GN_CPU_TARGET "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"
#define GN_VEC_BYTES 64
#include "group_norm_cpu_kernels_impl.h"

namespace gn_detection {
namespace cpu {

const KernelTable& kernels_avx512() {
  return avx512::table();
}

}  // namespace cpu
}  // namespace gn_detection
#endif
