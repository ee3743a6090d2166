"""Fake (meta) kernels of the gn_detection ops, for torch.compile and torch.export.

They compute output shapes, dtypes and memory layouts without touching data,
and check the same argument rules as the C++ kernels so a traced program fails
with the same messages as an eager one.
"""

import torch

from gn_detection.layers._checks import (
    accumulation_dtype,
    check_group_norm_args,
    check_group_norm_backward_args,
    kernel_layout,
)


def _empty_in_layout(like: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return torch.empty(like.shape, dtype=like.dtype, device=like.device)
    order = [0, *range(2, like.dim()), 1]
    permuted = torch.empty([like.shape[i] for i in order], dtype=like.dtype, device=like.device)
    inverse = [order.index(i) for i in range(like.dim())]
    return permuted.permute(inverse)


@torch.library.register_fake("gn_detection::group_norm_forward")
def _group_norm_forward_fake(input, weight, bias, num_groups, eps, relu):
    check_group_norm_args(input, weight, bias, num_groups, eps)
    output = _empty_in_layout(input, kernel_layout(input))
    stats_shape = (input.shape[0], num_groups)
    dtype = accumulation_dtype(input.dtype)
    mean = input.new_empty(stats_shape, dtype=dtype)
    rstd = input.new_empty(stats_shape, dtype=dtype)
    return output, mean, rstd


@torch.library.register_fake("gn_detection::group_norm_backward")
def _group_norm_backward_fake(grad_output, input, mean, rstd, weight, bias, num_groups, relu):
    check_group_norm_backward_args(grad_output, input, mean, rstd, weight, bias, num_groups)
    channels = input.shape[1]
    grad_input = _empty_in_layout(input, kernel_layout(input))
    weight_dtype = weight.dtype if weight is not None else input.dtype
    bias_dtype = bias.dtype if bias is not None else input.dtype
    grad_weight = input.new_empty((channels,), dtype=weight_dtype)
    grad_bias = input.new_empty((channels,), dtype=bias_dtype)
    return grad_input, grad_weight, grad_bias
