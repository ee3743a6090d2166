// The CUDA implementation of the gn_detection GroupNorm op, ATen side: argument
// checks, device guard and stream, memory layout, allocation (outputs and the
// kernels' workspace) and dtype dispatch. The kernels themselves are in
// group_norm_kernels.cu, behind the raw-pointer launchers of
// group_norm_kernels.h, so that nvcc never parses ATen.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "../group_norm.h"
#include "group_norm_kernels.h"

namespace gn_detection {
namespace {

using cuda_impl::GroupNormSizes;
using cuda_impl::LaunchTarget;

// The op is registered at the CUDA key, which a CUDA weight or bias also
// selects: the input itself must be a CUDA tensor.
void check_input_on_cuda(const at::Tensor& input, const char* op) {
  TORCH_CHECK(
      input.is_cuda(), "gn_detection::", op, ": input is on ", input.device(),
      " but another argument is a CUDA tensor: all tensors must be on one device");
}

// `param` contiguous, or an undefined tensor when absent.
at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& param) {
  return is_given(param) ? param->contiguous() : at::Tensor();
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

GroupNormSizes kernel_sizes(const GroupNormShape& shape, Layout layout) {
  return GroupNormSizes{
      shape.N, shape.C, shape.HxW, shape.G, layout == Layout::kChannelsLast};
}

// The current stream and SM count of the current device (set by the caller's guard).
LaunchTarget current_target() {
  return LaunchTarget{
      c10::cuda::getCurrentCUDAStream().stream(),
      at::cuda::getCurrentDeviceProperties()->multiProcessorCount};
}

at::Tensor workspace_of(int64_t bytes, const at::Tensor& like) {
  return at::empty({bytes}, like.options().dtype(at::kByte));
}

// Calls `launch(param_t{})` with the kernels' parameter type for `scalar_t`:
// scalar_t itself, or float for a float16/bfloat16 input with float32
// parameters. Only the type pairs instantiated in group_norm_kernels.cu occur.
template <typename scalar_t, typename Launch>
void with_param_type(at::ScalarType type, const Launch& launch) {
  if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
    if (type == at::kFloat) {
      launch(float{});
      return;
    }
  }
  launch(scalar_t{});
}

}  // namespace

TensorTriple group_norm_forward_cuda(
    const at::Tensor& input,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    double eps,
    bool relu) {
  const GroupNormShape shape = check_forward_inputs(input, weight, bias, num_groups, eps);
  check_input_on_cuda(input, "group_norm_forward");
  const c10::cuda::CUDAGuard device_guard(input.device());

  const Layout layout = choose_layout(input);
  const at::Tensor x = to_layout(input, layout);
  at::Tensor y = empty_in_layout(x, layout);
  const auto stats_options = input.options().dtype(accumulation_type(input.scalar_type()));
  at::Tensor mean = at::empty({shape.N, shape.G}, stats_options);
  at::Tensor rstd = at::empty({shape.N, shape.G}, stats_options);
  const at::ScalarType ptype = param_type(input, weight, bias);
  const at::Tensor gamma = contiguous_or_undefined(weight);
  const at::Tensor beta = contiguous_or_undefined(bias);
  const GroupNormSizes sizes = kernel_sizes(shape, layout);
  const LaunchTarget target = current_target();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gn_detection_group_norm_forward_cuda", [&] {
        using acc_t = cuda_impl::acc_type<scalar_t>;
        at::Tensor workspace = workspace_of(
            cuda_impl::group_norm_forward_workspace_bytes<acc_t>(sizes, target.num_sms), x);
        with_param_type<scalar_t>(ptype, [&](auto param_tag) {
          using param_t = decltype(param_tag);
          cuda_impl::launch_group_norm_forward<scalar_t, param_t>(
              sizes, x.const_data_ptr<scalar_t>(), data_or_null<param_t>(gamma),
              data_or_null<param_t>(beta), eps, relu, y.data_ptr<scalar_t>(),
              mean.data_ptr<acc_t>(), rstd.data_ptr<acc_t>(), workspace.data_ptr(), target);
        });
      });
  return {y, mean, rstd};
}

TensorTriple group_norm_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& mean,
    const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    bool relu) {
  const GroupNormShape shape =
      check_backward_inputs(grad_output, input, mean, rstd, weight, bias, num_groups);
  check_input_on_cuda(input, "group_norm_backward");
  const c10::cuda::CUDAGuard device_guard(input.device());

  const Layout layout = choose_layout(input);
  const at::Tensor x = to_layout(input, layout);
  const at::Tensor dy = to_layout(grad_output, layout);
  const at::Tensor mean_c = mean.contiguous();
  const at::Tensor rstd_c = rstd.contiguous();
  at::Tensor dx = empty_in_layout(x, layout);
  const at::ScalarType ptype = param_type(input, weight, bias);
  const at::Tensor gamma = contiguous_or_undefined(weight);
  const at::Tensor beta = contiguous_or_undefined(bias);
  at::Tensor dgamma = at::empty({shape.C}, input.options().dtype(ptype));
  at::Tensor dbeta = at::empty({shape.C}, input.options().dtype(ptype));
  const GroupNormSizes sizes = kernel_sizes(shape, layout);
  const LaunchTarget target = current_target();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gn_detection_group_norm_backward_cuda", [&] {
        using acc_t = cuda_impl::acc_type<scalar_t>;
        at::Tensor workspace = workspace_of(
            cuda_impl::group_norm_backward_workspace_bytes<acc_t>(sizes, target.num_sms), x);
        with_param_type<scalar_t>(ptype, [&](auto param_tag) {
          using param_t = decltype(param_tag);
          cuda_impl::launch_group_norm_backward<scalar_t, param_t>(
              sizes, dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
              mean_c.const_data_ptr<acc_t>(), rstd_c.const_data_ptr<acc_t>(),
              data_or_null<param_t>(gamma), data_or_null<param_t>(beta), relu,
              dx.data_ptr<scalar_t>(), dgamma.data_ptr<param_t>(), dbeta.data_ptr<param_t>(),
              workspace.data_ptr(), target);
        });
      });

  return {dx, grad_in_dtype_of(dgamma, weight, input), grad_in_dtype_of(dbeta, bias, input)};
}

TORCH_LIBRARY_IMPL(gn_detection, CUDA, m) {
  m.impl("group_norm_forward", TORCH_FN(group_norm_forward_cuda));
  m.impl("group_norm_backward", TORCH_FN(group_norm_backward_cuda));
}

}  // namespace gn_detection
