// The ATen side of the CPU GroupNorm op: argument checks, layout, allocation,
// dtype dispatch and the choice of the kernel build for this processor.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "../group_norm.h"
#include "group_norm_cpu_kernels.h"

namespace gn_detection {
namespace {

// Kernel builds by name, widest last, as GN_CPU_CAPABILITY names them.
constexpr const char* kCapabilities[] = {"baseline", "avx2", "avx512"};
constexpr int kNumCapabilities = 3;

// The widest build that GN_CPU_CAPABILITY allows: its index in kCapabilities.
// Unset (or empty) allows all; an unknown name is an error that lists the
// known ones, so that a typo does not silently measure another build.
int allowed_capability() {
  const char* cap = std::getenv("GN_CPU_CAPABILITY");
  if (cap == nullptr || cap[0] == '\0') {
    return kNumCapabilities - 1;
  }
  for (int i = 0; i < kNumCapabilities; ++i) {
    if (std::strcmp(cap, kCapabilities[i]) == 0) {
      return i;
    }
  }
  TORCH_CHECK_VALUE(
      false, "GN_CPU_CAPABILITY=", cap, " names no build of the CPU kernels; use one of baseline, avx2, avx512 ",
      "(or leave it unset for the best build this processor runs)");
}

// The best kernel build this processor runs. GN_CPU_CAPABILITY=baseline|avx2|
// avx512 caps it (as ATEN_CPU_CAPABILITY does for ATen), e.g. to compare builds.
const cpu::KernelTable& kernels() {
  static const cpu::KernelTable& table = []() -> const cpu::KernelTable& {
    const int allowed = allowed_capability();
#ifdef GN_X86_DISPATCH
    __builtin_cpu_init();
    const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
    const bool has_avx512 = has_avx2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl");
    if (allowed >= 2 && has_avx512) {
      return cpu::kernels_avx512();
    }
    if (allowed >= 1 && has_avx2) {
      return cpu::kernels_avx2();
    }
#else
    (void)allowed;
#endif
    return cpu::kernels_baseline();
  }();
  return table;
}

cpu::DtypeCombo dtype_combo(at::ScalarType input, at::ScalarType params) {
  const bool float_params = params == at::kFloat;
  switch (input) {
    case at::kFloat:
      return cpu::DtypeCombo::kFloat;
    case at::kDouble:
      return cpu::DtypeCombo::kDouble;
    case at::kHalf:
      return float_params ? cpu::DtypeCombo::kHalfFloatParams : cpu::DtypeCombo::kHalf;
    case at::kBFloat16:
      return float_params ? cpu::DtypeCombo::kBFloat16FloatParams : cpu::DtypeCombo::kBFloat16;
    default:
      TORCH_CHECK(false, "GroupNorm: unsupported input dtype ", input);
  }
}

const void* data_or_null(const std::optional<at::Tensor>& t, at::Tensor& holder) {
  if (!is_given(t)) {
    return nullptr;
  }
  holder = t->contiguous();
  return holder.const_data_ptr();
}

void check_cpu(const at::Tensor& input) {
  TORCH_CHECK(input.device().is_cpu(), "group_norm CPU kernel got a tensor on ", input.device());
}

}  // namespace

TensorTriple group_norm_forward_cpu(
    const at::Tensor& input, const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    int64_t num_groups, double eps, bool relu) {
  check_cpu(input);
  const GroupNormShape shape = check_forward_inputs(input, weight, bias, num_groups, eps);
  const Layout layout = choose_layout(input);
  const at::Tensor x = to_layout(input, layout);
  at::Tensor output = empty_in_layout(input, layout);
  const auto stats_options = input.options().dtype(accumulation_type(input.scalar_type()));
  at::Tensor mean = at::empty({shape.N, shape.G}, stats_options);
  at::Tensor rstd = at::empty({shape.N, shape.G}, stats_options);
  at::Tensor weight_holder, bias_holder;
  cpu::ForwardArgs args{
      x.const_data_ptr(),
      data_or_null(weight, weight_holder),
      data_or_null(bias, bias_holder),
      output.data_ptr(),
      mean.data_ptr(),
      rstd.data_ptr(),
      shape.N,
      shape.C,
      shape.HxW,
      shape.G,
      eps,
      relu,
      layout == Layout::kChannelsLast};
  const auto combo = dtype_combo(input.scalar_type(), param_type(input, weight, bias));
  kernels().forward[static_cast<int>(combo)](args);
  return {output, mean, rstd};
}

TensorTriple group_norm_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, int64_t num_groups, bool relu) {
  check_cpu(input);
  const GroupNormShape shape = check_backward_inputs(grad_output, input, mean, rstd, weight, bias, num_groups);
  const Layout layout = choose_layout(input);
  const at::Tensor x = to_layout(input, layout);
  const at::Tensor dy = to_layout(grad_output, layout);
  const at::Tensor mean_c = mean.contiguous();
  const at::Tensor rstd_c = rstd.contiguous();
  at::Tensor grad_input = empty_in_layout(input, layout);
  const at::ScalarType ptype = param_type(input, weight, bias);
  at::Tensor grad_weight = at::empty({shape.C}, input.options().dtype(ptype));
  at::Tensor grad_bias = at::empty({shape.C}, input.options().dtype(ptype));
  at::Tensor weight_holder, bias_holder;
  cpu::BackwardArgs args{
      dy.const_data_ptr(),
      x.const_data_ptr(),
      mean_c.const_data_ptr(),
      rstd_c.const_data_ptr(),
      data_or_null(weight, weight_holder),
      data_or_null(bias, bias_holder),
      grad_input.data_ptr(),
      grad_weight.data_ptr(),
      grad_bias.data_ptr(),
      shape.N,
      shape.C,
      shape.HxW,
      shape.G,
      relu,
      layout == Layout::kChannelsLast};
  const auto combo = dtype_combo(input.scalar_type(), ptype);
  kernels().backward[static_cast<int>(combo)](args);
  return {grad_input, grad_in_dtype_of(grad_weight, weight, input), grad_in_dtype_of(grad_bias, bias, input)};
}

TORCH_LIBRARY_IMPL(gn_detection, CPU, m) {
  m.impl("group_norm_forward", &group_norm_forward_cpu);
  m.impl("group_norm_backward", &group_norm_backward_cpu);
}

}  // namespace gn_detection
