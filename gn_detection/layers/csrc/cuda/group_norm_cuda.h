// CUDA implementations of the gn_detection GroupNorm op (group_norm_cuda.cpp),
// with the signatures of the CPU ones in ../group_norm.h. They are registered
// at the CUDA dispatch key; the kernels are in group_norm_kernels.cu.
#pragma once

#include "../group_norm.h"

namespace gn_detection {

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

}  // namespace gn_detection
