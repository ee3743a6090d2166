// Argument checks and memory-layout rules shared by the CPU and CUDA kernels.
// The fake kernels (gn_detection/layers/_checks.py) apply the same rules.
#include <ATen/ATen.h>

#include <numeric>
#include <vector>

#include "group_norm.h"

namespace gn_detection {
namespace {

bool is_half_type(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

void check_param(
    const std::optional<at::Tensor>& param, const char* name,
    const at::Tensor& input) {
  if (!is_given(param)) {
    return;
  }
  const int64_t C = input.size(1);
  TORCH_CHECK_VALUE(
      param->dim() == 1 && param->size(0) == C, name, " must have shape (", C,
      ",) to match input shape ", input.sizes(), ", got ", param->sizes());
  TORCH_CHECK_TYPE(
      param->scalar_type() == input.scalar_type() ||
          (param->scalar_type() == at::kFloat && is_half_type(input.scalar_type())),
      name, " dtype ", param->scalar_type(), " must be the input dtype ",
      input.scalar_type(), " (or float32 for a float16/bfloat16 input)");
  TORCH_CHECK(
      param->device() == input.device(), name, " is on ", param->device(),
      " but input is on ", input.device(), ": all tensors must be on one device");
}

// Order of dimensions in memory for `layout`: (N, C, spatial...) or (N, spatial..., C).
std::vector<int64_t> memory_order(int64_t dim, Layout layout) {
  std::vector<int64_t> order(dim);
  std::iota(order.begin(), order.end(), 0);
  if (layout == Layout::kChannelsLast) {
    order.erase(order.begin() + 1);
    order.push_back(1);
  }
  return order;
}

std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& order) {
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    inverse[order[i]] = static_cast<int64_t>(i);
  }
  return inverse;
}

// Dense in (N, spatial..., C) order; size-1 dimensions may have any stride.
bool is_channels_last_dense(const at::Tensor& t) {
  if (t.dim() < 3) {
    return false;
  }
  const int64_t C = t.size(1);
  if (C > 1 && t.stride(1) != 1) {
    return false;
  }
  int64_t expected = C;
  for (int64_t d = t.dim() - 1; d >= 2; --d) {
    if (t.size(d) != 1 && t.stride(d) != expected) {
      return false;
    }
    expected *= t.size(d);
  }
  return t.size(0) == 1 || t.stride(0) == expected;
}

}  // namespace

at::ScalarType accumulation_type(at::ScalarType input_type) {
  return input_type == at::kDouble ? at::kDouble : at::kFloat;
}

bool is_given(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined();
}

at::ScalarType param_type(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias) {
  if (is_given(weight)) {
    return weight->scalar_type();
  }
  if (is_given(bias)) {
    return bias->scalar_type();
  }
  return input.scalar_type();
}

at::Tensor grad_in_dtype_of(
    const at::Tensor& grad, const std::optional<at::Tensor>& param, const at::Tensor& input) {
  return grad.to(is_given(param) ? param->scalar_type() : input.scalar_type());
}

GroupNormShape check_forward_inputs(
    const at::Tensor& input, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups, double eps) {
  TORCH_CHECK_VALUE(
      input.dim() >= 2,
      "GroupNorm expects an input of shape (N, C, *) with at least 2 "
      "dimensions, got ", input.sizes());
  TORCH_CHECK_TYPE(
      input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble ||
          is_half_type(input.scalar_type()),
      "GroupNorm expects a float32, float64, float16 or bfloat16 input, got ",
      input.scalar_type());
  TORCH_CHECK_VALUE(num_groups > 0, "num_groups must be positive, got ", num_groups);
  const int64_t C = input.size(1);
  TORCH_CHECK_VALUE(
      C % num_groups == 0, "num_channels C=", C,
      " must be divisible by num_groups=", num_groups, " (input shape ",
      input.sizes(), ")");
  TORCH_CHECK_VALUE(eps >= 0, "eps must be non-negative, got ", eps);
  check_param(weight, "weight", input);
  check_param(bias, "bias", input);
  if (is_given(weight) && is_given(bias)) {
    TORCH_CHECK_TYPE(
        weight->scalar_type() == bias->scalar_type(), "weight dtype ", weight->scalar_type(),
        " and bias dtype ", bias->scalar_type(), " must be equal");
  }
  int64_t HxW = 1;
  for (int64_t d = 2; d < input.dim(); ++d) {
    HxW *= input.size(d);
  }
  return GroupNormShape{input.size(0), C, HxW, num_groups};
}

GroupNormShape check_backward_inputs(
    const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& mean, const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, int64_t num_groups) {
  const GroupNormShape shape = check_forward_inputs(input, weight, bias, num_groups, 0.0);
  TORCH_CHECK_VALUE(
      grad_output.sizes() == input.sizes(), "grad_output shape ",
      grad_output.sizes(), " must equal input shape ", input.sizes());
  TORCH_CHECK_TYPE(
      grad_output.scalar_type() == input.scalar_type(), "grad_output dtype ",
      grad_output.scalar_type(), " must equal input dtype ", input.scalar_type());
  const auto stats_type = accumulation_type(input.scalar_type());
  for (const auto* stat : {&mean, &rstd}) {
    const char* name = stat == &mean ? "mean" : "rstd";
    TORCH_CHECK_VALUE(
        stat->dim() == 2 && stat->size(0) == shape.N && stat->size(1) == num_groups,
        name, " must have shape (N, num_groups) = (", shape.N, ", ", num_groups,
        "), got ", stat->sizes());
    TORCH_CHECK_TYPE(
        stat->scalar_type() == stats_type, name, " dtype ", stat->scalar_type(),
        " must be ", stats_type, " for a ", input.scalar_type(), " input");
  }
  for (const auto* t : {&grad_output, &mean, &rstd}) {
    TORCH_CHECK(
        t->device() == input.device(), "GroupNorm backward: a tensor is on ",
        t->device(), " but input is on ", input.device(),
        ": all tensors must be on one device");
  }
  return shape;
}

Layout choose_layout(const at::Tensor& input) {
  if (input.is_contiguous() || !is_channels_last_dense(input)) {
    return Layout::kChannelsFirst;
  }
  return Layout::kChannelsLast;
}

at::Tensor to_layout(const at::Tensor& t, Layout layout) {
  if (layout == Layout::kChannelsFirst || t.dim() < 3) {
    return t.contiguous();
  }
  if (is_channels_last_dense(t)) {
    return t;
  }
  const auto order = memory_order(t.dim(), layout);
  return t.permute(order).contiguous().permute(inverse_permutation(order));
}

at::Tensor empty_in_layout(const at::Tensor& like, Layout layout) {
  if (layout == Layout::kChannelsFirst || like.dim() < 3) {
    return at::empty(like.sizes(), like.options());
  }
  const auto order = memory_order(like.dim(), layout);
  std::vector<int64_t> sizes;
  for (int64_t d : order) {
    sizes.push_back(like.size(d));
  }
  return at::empty(sizes, like.options()).permute(inverse_permutation(order));
}

}  // namespace gn_detection
