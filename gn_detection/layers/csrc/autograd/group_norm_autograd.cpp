// Autograd of gn_detection::group_norm_forward, registered at the Autograd key.
//
// The forward saves the input, the per-group statistics and the affine
// parameters; it does not save the output. The fused ReLU's mask is recomputed
// in the backward from the input (z > 0), so the fused layer keeps one tensor
// per call alive for the backward where GroupNorm followed by ReLU keeps two.
// Both directions call the registered ops through the dispatcher, so CPU, CUDA
// and the fake kernels used by torch.compile are all reached the same way.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "../group_norm.h"

namespace gn_detection {
namespace {

TensorTriple call_forward(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
    bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gn_detection::group_norm_forward", "")
                       .typed<decltype(call_forward)>();
  return op.call(input, weight, bias, num_groups, eps, relu);
}

TensorTriple call_backward(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups, bool relu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gn_detection::group_norm_backward", "")
                       .typed<decltype(call_backward)>();
  return op.call(grad_output, input, mean, rstd, weight, bias, num_groups, relu);
}

std::optional<at::Tensor> optional_if_defined(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class GroupNormFunction : public torch::autograd::Function<GroupNormFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx,
      const at::Tensor& input,
      const std::optional<at::Tensor>& weight,
      const std::optional<at::Tensor>& bias,
      int64_t num_groups,
      double eps,
      bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [output, mean, rstd] = call_forward(input, weight, bias, num_groups, eps, relu);
    ctx->save_for_backward(
        {input, mean, rstd, weight.value_or(at::Tensor()), bias.value_or(at::Tensor())});
    ctx->saved_data["num_groups"] = num_groups;
    ctx->saved_data["relu"] = relu;
    ctx->mark_non_differentiable({mean, rstd});
    return {output, mean, rstd};
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      const torch::autograd::variable_list& grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& input = saved[0];
    const at::Tensor& weight = saved[3];
    const at::Tensor& bias = saved[4];
    at::Tensor grad_output = grad_outputs[0];
    if (!grad_output.defined()) {
      grad_output = at::zeros_like(input);
    }
    auto [grad_input, grad_weight, grad_bias] = call_backward(
        grad_output, input, saved[1], saved[2], optional_if_defined(weight),
        optional_if_defined(bias), ctx->saved_data["num_groups"].toInt(),
        ctx->saved_data["relu"].toBool());
    return {
        grad_input,
        weight.defined() ? grad_weight : at::Tensor(),
        bias.defined() ? grad_bias : at::Tensor(),
        at::Tensor(),
        at::Tensor(),
        at::Tensor()};
  }
};

TensorTriple group_norm_forward_autograd(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups, double eps,
    bool relu) {
  auto outputs = GroupNormFunction::apply(input, weight, bias, num_groups, eps, relu);
  return {outputs[0], outputs[1], outputs[2]};
}

// The backward op as a node of its own, so that a backward run under
// create_graph=True fails loudly instead of returning gradients that silently
// lack a second derivative.
class GroupNormBackwardFunction
    : public torch::autograd::Function<GroupNormBackwardFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext*,
      const at::Tensor& grad_output,
      const at::Tensor& input,
      const at::Tensor& mean,
      const at::Tensor& rstd,
      const std::optional<at::Tensor>& weight,
      const std::optional<at::Tensor>& bias,
      int64_t num_groups,
      bool relu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_input, grad_weight, grad_bias] =
        call_backward(grad_output, input, mean, rstd, weight, bias, num_groups, relu);
    return {grad_input, grad_weight, grad_bias};
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext*,
      const torch::autograd::variable_list&) {
    TORCH_CHECK(
        false,
        "double backward through the gn_detection GroupNorm op is not "
        "supported (gn_detection::group_norm_backward is not differentiable)");
  }
};

TensorTriple group_norm_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups, bool relu) {
  auto grads = GroupNormBackwardFunction::apply(
      grad_output, input, mean, rstd, weight, bias, num_groups, relu);
  return {grads[0], grads[1], grads[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gn_detection, Autograd, m) {
  m.impl("group_norm_forward", &group_norm_forward_autograd);
  m.impl("group_norm_backward", &group_norm_backward_autograd);
}

}  // namespace gn_detection
