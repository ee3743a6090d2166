// CPU kernels built for the baseline instruction set of the compiler's target.
#define GN_CPU_CAPABILITY baseline
#define GN_VEC_BYTES 16
#include "group_norm_cpu_kernels_impl.h"

namespace gn_detection {
namespace cpu {

const KernelTable& kernels_baseline() {
  return baseline::table();
}

}  // namespace cpu
}  // namespace gn_detection
