// Schema of the gn_detection GroupNorm op, and the CUDA placeholder of a build
// without CUDA. Kernels register themselves from cpu/, cuda/ and autograd/;
// the fake (meta) kernels that tracing uses are registered in Python
// (gn_detection/layers/_fake_kernels.py).
#include <torch/library.h>

#include "group_norm.h"

namespace gn_detection {

TORCH_LIBRARY(gn_detection, m) {
  m.def(
      "group_norm_forward(Tensor input, Tensor? weight, Tensor? bias, "
      "int num_groups, float eps, bool relu) -> (Tensor, Tensor, Tensor)");
  m.def(
      "group_norm_backward(Tensor grad_output, Tensor input, Tensor mean, "
      "Tensor rstd, Tensor? weight, Tensor? bias, int num_groups, bool relu) "
      "-> (Tensor, Tensor, Tensor)");
}

#ifndef WITH_CUDA
namespace {

[[noreturn]] void fail_without_cuda() {
  TORCH_CHECK(
      false,
      "gn_detection::group_norm got a CUDA tensor, but gn_detection was built "
      "without CUDA (no CUDA toolkit was found at build time). Rebuild it with a "
      "CUDA toolkit, e.g. `FORCE_CUDA=1 CUDA_HOME=/usr/local/cuda pip install "
      "--no-build-isolation -e .`");
}

TensorTriple forward_without_cuda(
    const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, int64_t, double, bool) {
  fail_without_cuda();
}

TensorTriple backward_without_cuda(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
    bool) {
  fail_without_cuda();
}

}  // namespace

TORCH_LIBRARY_IMPL(gn_detection, CUDA, m) {
  m.impl("group_norm_forward", &forward_without_cuda);
  m.impl("group_norm_backward", &backward_without_cuda);
}
#endif

}  // namespace gn_detection
