"""Argument rules of the GroupNorm op in Python, for the fake kernels.

The C++ kernels enforce the same rules (csrc/group_norm_checks.cpp) with the
same messages; these run where no C++ kernel does (tracing with fake tensors).
"""

import torch

_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HALF = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_group_norm_args(input, weight, bias, num_groups, eps: float = 0.0) -> None:
    """Raises ValueError (shapes, groups, eps), TypeError (dtypes) or RuntimeError
    (devices) with a message that names the bad argument and the shapes, in the
    order of check_forward_inputs in csrc/group_norm_checks.cpp. The backward
    checks its arguments with eps = 0, as the C++ backward does."""
    shape = list(input.shape)
    torch._check_value(
        input.dim() >= 2,
        lambda: f"GroupNorm expects an input of shape (N, C, *) with at least 2 dimensions, got {shape}",
    )
    torch._check_type(
        input.dtype in _FLOATING,
        lambda: f"GroupNorm expects a float32, float64, float16 or bfloat16 input, got {input.dtype}",
    )
    torch._check_value(num_groups > 0, lambda: f"num_groups must be positive, got {num_groups}")
    channels = input.shape[1]
    torch._check_value(
        channels % num_groups == 0,
        lambda: f"num_channels C={channels} must be divisible by num_groups={num_groups} (input shape {shape})",
    )
    torch._check_value(eps >= 0, lambda: f"eps must be non-negative, got {eps}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None:
            continue
        torch._check_value(
            param.dim() == 1 and param.shape[0] == channels,
            lambda: f"{name} must have shape ({channels},) to match input shape {shape}, got {list(param.shape)}",
        )
        torch._check_type(
            param.dtype == input.dtype or (param.dtype == torch.float32 and input.dtype in _HALF),
            lambda: f"{name} dtype {param.dtype} must be the input dtype {input.dtype}"
            " (or float32 for a float16/bfloat16 input)",
        )
        torch._check(
            param.device == input.device,
            lambda: f"{name} is on {param.device} but input is on {input.device}: all tensors must be on one device",
        )
    if weight is not None and bias is not None:
        torch._check_type(
            weight.dtype == bias.dtype, lambda: f"weight dtype {weight.dtype} and bias dtype {bias.dtype} must be equal"
        )


def check_group_norm_backward_args(grad_output, input, mean, rstd, weight, bias, num_groups) -> None:
    """The backward's rules (check_backward_inputs in csrc/group_norm_checks.cpp),
    in its order: the forward's, then grad_output, the statistics, the devices."""
    check_group_norm_args(input, weight, bias, num_groups)
    torch._check_value(
        grad_output.shape == input.shape,
        lambda: f"grad_output shape {list(grad_output.shape)} must equal input shape {list(input.shape)}",
    )
    torch._check_type(
        grad_output.dtype == input.dtype,
        lambda: f"grad_output dtype {grad_output.dtype} must equal input dtype {input.dtype}",
    )
    stats_dtype = accumulation_dtype(input.dtype)
    for name, stat in (("mean", mean), ("rstd", rstd)):
        torch._check_value(
            stat.dim() == 2 and stat.shape[0] == input.shape[0] and stat.shape[1] == num_groups,
            lambda: f"{name} must have shape (N, num_groups) = ({input.shape[0]}, {num_groups}), "
            f"got {list(stat.shape)}",
        )
        torch._check_type(
            stat.dtype == stats_dtype,
            lambda: f"{name} dtype {stat.dtype} must be {stats_dtype} for a {input.dtype} input",
        )
    for tensor in (grad_output, mean, rstd):
        torch._check(
            tensor.device == input.device,
            lambda: f"GroupNorm backward: a tensor is on {tensor.device} but input is on {input.device}: "
            "all tensors must be on one device",
        )


def kernel_layout(input: torch.Tensor) -> bool:
    """True where the kernels treat `input` as channels-last (memory ordered (N, spatial..., C))."""
    if input.is_contiguous() or input.dim() < 3:
        return False
    channels = input.shape[1]
    expected = channels
    if input.stride(1) != 1 and channels > 1:
        return False
    for dim in range(input.dim() - 1, 1, -1):
        if input.shape[dim] != 1 and input.stride(dim) != expected:
            return False
        expected *= input.shape[dim]
    return input.shape[0] == 1 or input.stride(0) == expected
