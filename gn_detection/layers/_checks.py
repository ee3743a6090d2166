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


def check_group_norm_args(input, weight, bias, num_groups) -> None:
    """Raises ValueError (shapes, groups), TypeError (dtypes) or RuntimeError
    (devices) with a message that names the bad argument and the shapes."""
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
    if weight is not None and bias is not None:
        torch._check_type(
            weight.dtype == bias.dtype, lambda: f"weight dtype {weight.dtype} and bias dtype {bias.dtype} must be equal"
        )
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
