// Entry points of the gn_detection GroupNorm op, per device, and the checks,
// layout and dtype rules that the CPU and CUDA implementations share.
//
// Schema (registered in group_norm.cpp):
//   group_norm_forward(input, weight?, bias?, num_groups, eps, relu)
//       -> (output, mean, rstd)
//   group_norm_backward(grad_output, input, mean, rstd, weight?, bias?, num_groups, relu)
//       -> (grad_input, grad_weight, grad_bias)
// `mean` and `rstd` have shape (N, num_groups) and the accumulation dtype
// (float32 for float16/bfloat16/float32 inputs, float64 for float64), so the
// backward of a low-precision input keeps full-precision statistics.
// grad_weight and grad_bias have shape (C,) and the dtype of weight (input's
// dtype when weight is absent); the autograd wrapper drops those the caller did
// not pass.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace gn_detection {

using TensorTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Memory layouts the kernels handle natively; anything else is made
// contiguous first. kChannelsLast covers channels_last and channels_last_3d:
// memory ordered (N, HxW..., C). An input with HxW = 1 ((N, C), (N, C, 1, 1))
// is contiguous, so choose_layout calls it kChannelsFirst, but its memory is
// (N, C) in both orders and the kernels give it the path that suits that: the
// CPU kernels their channels-last loops (vectorized along C), the CUDA kernels
// one pass per group by a segment of a warp (statistics and output, or sums
// and input gradient, in one kernel).
enum class Layout { kChannelsFirst, kChannelsLast };

// Sizes of an (N, C, *) input seen as (N, C, HxW).
struct GroupNormShape {
  int64_t N;
  int64_t C;
  int64_t HxW;
  int64_t G;
};

// Validates the forward arguments (dimensions, groups, dtypes, devices,
// weight/bias sizes) with messages that name the problem and the shapes.
GroupNormShape check_forward_inputs(
    const at::Tensor& input,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    double eps);

// Validates the backward arguments against each other, then the forward ones.
GroupNormShape check_backward_inputs(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& mean,
    const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups);

// The layout a kernel should use for `input`: channels-first when the input is
// contiguous (which includes every dense input with HxW = 1, see Layout),
// channels-last when it is dense in (N, spatial..., C) order, else
// channels-first after a copy.
Layout choose_layout(const at::Tensor& input);

// `t` rearranged (if needed) so that its memory follows `layout` for a tensor of
// `t`'s rank: contiguous, channels_last (4-D) or channels_last_3d (5-D).
at::Tensor to_layout(const at::Tensor& t, Layout layout);

// An uninitialized tensor with `like`'s sizes, options and memory in `layout`.
at::Tensor empty_in_layout(const at::Tensor& like, Layout layout);

// The accumulation dtype of an input dtype: float for half and bfloat16.
at::ScalarType accumulation_type(at::ScalarType input_type);

// Whether an optional tensor argument was passed.
bool is_given(const std::optional<at::Tensor>& t);

// The dtype in which the kernels read the affine parameters and write their
// gradients: weight's, else bias's (the checks make the two equal), else the
// input's.
at::ScalarType param_type(
    const at::Tensor& input,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias);

// A parameter's gradient in that parameter's dtype (the input's when the
// parameter is absent), as the backward returns it.
at::Tensor grad_in_dtype_of(
    const at::Tensor& grad, const std::optional<at::Tensor>& param, const at::Tensor& input);

TensorTriple group_norm_forward_cpu(
    const at::Tensor& input,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    double eps,
    bool relu);

TensorTriple group_norm_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& mean,
    const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    bool relu);

#ifdef WITH_CUDA
// CUDA implementations (cuda/group_norm_cuda.cpp), same signatures as the CPU ones.
TensorTriple group_norm_forward_cuda(
    const at::Tensor& input,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    double eps,
    bool relu);

TensorTriple group_norm_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& mean,
    const at::Tensor& rstd,
    const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias,
    int64_t num_groups,
    bool relu);
#endif

}  // namespace gn_detection
