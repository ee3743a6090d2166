"""Bad arguments, device registrations and unsupported uses of the GroupNorm op.

Every bad input must raise the documented error type (ValueError for shapes
and groups, TypeError for dtypes, RuntimeError for devices) with a message that
names the problem and the shapes, both from the C++ kernels (eager) and from
the Python fake kernels that torch.compile and torch.export trace with.
"""

import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from gn_detection.layers import GroupNorm, cuda_compiled, group_norm

forward_op = torch.ops.gn_detection.group_norm_forward
backward_op = torch.ops.gn_detection.group_norm_backward


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws its random inputs from the same seed, so failures reproduce."""
    torch.manual_seed(20240)


X_SHAPE = (2, 6, 4, 4)


def _x(dtype=torch.float32, shape=X_SHAPE):
    return torch.randn(shape).to(dtype)


# (id, builder of the forward arguments, exception type, regexes the message must match)
FORWARD_CASES = [
    ("groups_not_dividing_C", lambda: (_x(), None, None, 4), ValueError,
     [r"C=6", r"num_groups=4", re.escape("[2, 6, 4, 4]")]),
    ("zero_groups", lambda: (_x(), None, None, 0), ValueError, [r"num_groups must be positive, got 0"]),
    ("negative_groups", lambda: (_x(), None, None, -2), ValueError, [r"num_groups must be positive, got -2"]),
    ("one_dimensional_input", lambda: (torch.randn(6), None, None, 2), ValueError,
     [r"at least 2 dimensions", re.escape("[6]")]),
    ("weight_too_short", lambda: (_x(), torch.ones(5), None, 2), ValueError,
     [r"weight must have shape \(6,\)", re.escape("[2, 6, 4, 4]"), r"got \[5\]"]),
    ("bias_too_long", lambda: (_x(), torch.ones(6), torch.zeros(7), 2), ValueError,
     [r"bias must have shape \(6,\)", r"got \[7\]"]),
    ("weight_two_dimensional", lambda: (_x(), torch.ones(6, 1), None, 2), ValueError,
     [r"weight must have shape \(6,\)", r"got \[6, 1\]"]),
    ("integer_input", lambda: (torch.randint(0, 5, X_SHAPE), None, None, 2), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(Long|int64)"]),
    ("bool_input", lambda: (torch.ones(X_SHAPE, dtype=torch.bool), None, None, 2), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(Bool|bool)"]),
    ("complex_input", lambda: (torch.randn(X_SHAPE, dtype=torch.complex64), None, None, 2), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(ComplexFloat|complex64)"]),
    ("float64_weight_for_float32_input", lambda: (_x(), torch.ones(6, dtype=torch.float64), None, 2), TypeError,
     [r"weight dtype", r"(Double|float64)", r"(Float|float32)"]),
    ("integer_bias", lambda: (_x(), None, torch.zeros(6, dtype=torch.int32), 2), TypeError,
     [r"bias dtype", r"(Int|int32)"]),
    ("bfloat16_weight_for_float32_input", lambda: (_x(), torch.ones(6, dtype=torch.bfloat16), None, 2),
     TypeError, [r"weight dtype", r"(BFloat16|bfloat16)"]),
    ("float16_weight_for_bfloat16_input",
     lambda: (_x(torch.bfloat16), torch.ones(6, dtype=torch.float16), None, 2), TypeError,
     [r"weight dtype", r"(Half|float16)"]),
    ("weight_and_bias_dtypes_differ",
     lambda: (_x(torch.bfloat16), torch.ones(6, dtype=torch.bfloat16), torch.zeros(6), 2), TypeError,
     [r"weight dtype", r"bias dtype", r"(BFloat16|bfloat16)", r"(Float|float32)"]),
]


def _check_error(excinfo, patterns):
    message = str(excinfo.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"message {message!r} does not match {pattern!r}"


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_rejects_bad_arguments(case):
    _, build, error, patterns = case
    x, weight, bias, groups = build()
    with pytest.raises(error) as excinfo:
        forward_op(x, weight, bias, groups, 1e-5, False)
    _check_error(excinfo, patterns)


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_fake_kernel_rejects_bad_arguments(case):
    """The fake kernel (what torch.compile/export trace) raises the same error type and message."""
    _, build, error, patterns = case
    x, weight, bias, groups = build()
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fakes = [None if t is None else mode.from_tensor(t) for t in (x, weight, bias)]
        with pytest.raises(error) as excinfo:
            forward_op(fakes[0], fakes[1], fakes[2], groups, 1e-5, False)
    _check_error(excinfo, patterns)


def test_negative_eps_is_rejected():
    with pytest.raises(ValueError, match=r"eps must be non-negative, got -0\.1"):
        forward_op(_x(), None, None, 2, -0.1, False)


def test_bad_activation():
    with pytest.raises(ValueError, match=r"activation must be one of .*'gelu'"):
        group_norm(_x(), 2, activation="gelu")
    with pytest.raises(ValueError, match=r"activation must be one of .*'relu_'"):
        GroupNorm(2, 6, activation="relu_")


def test_module_with_channels_not_divisible_raises_value_error():
    """nn.GroupNorm's own constructor check still applies to the subclass."""
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(4, 6)


def test_module_called_on_wrong_channel_count():
    module = GroupNorm(2, 6)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\).*got \[6\]"):
        module(torch.randn(2, 8, 3, 3))


def _meta_weight():
    return torch.ones(6, device="meta")


def test_parameters_on_another_device_raise_runtime_error():
    """Tensors on two devices: a RuntimeError that names both devices. With a
    meta weight the dispatcher picks the fake kernel; the CPU kernel's own check
    is reached by dispatching to it directly."""
    with pytest.raises(RuntimeError, match=r"weight is on meta but input is on cpu.*one device"):
        forward_op(_x(), _meta_weight(), None, 2, 1e-5, False)
    cpu_keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    with pytest.raises(RuntimeError, match=r"bias is on meta but input is on cpu.*one device"):
        forward_op.default.redispatch(cpu_keys, _x(), None, _meta_weight(), 2, 1e-5, False)


def _valid_backward_args():
    x = _x()
    y, mean, rstd = forward_op(x, None, None, 2, 1e-5, False)
    return {"grad_output": torch.randn_like(y), "input": x, "mean": mean, "rstd": rstd,
            "weight": None, "bias": None, "num_groups": 2, "relu": False}


BACKWARD_CASES = [
    ("grad_output_shape", {"grad_output": torch.randn(2, 6, 4, 5)}, ValueError,
     [r"grad_output shape \[2, 6, 4, 5\] must equal input shape \[2, 6, 4, 4\]"]),
    ("grad_output_dtype", {"grad_output": torch.randn(X_SHAPE, dtype=torch.float64)}, TypeError,
     [r"grad_output dtype", r"(Double|float64)"]),
    ("mean_shape", {"mean": torch.zeros(2, 3)}, ValueError, [r"mean must have shape \(N, num_groups\) = \(2, 2\)",
                                                             r"got \[2, 3\]"]),
    ("rstd_dtype", {"rstd": torch.ones(2, 2, dtype=torch.float64)}, TypeError,
     [r"rstd dtype", r"(Double|float64)"]),
    ("groups", {"num_groups": 4}, ValueError, [r"C=6", r"num_groups=4"]),
]


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=[c[0] for c in BACKWARD_CASES])
def test_backward_rejects_bad_arguments(case):
    _, override, error, patterns = case
    args = _valid_backward_args()
    args.update(override)
    with pytest.raises(error) as excinfo:
        backward_op(*args.values())
    _check_error(excinfo, patterns)


def test_double_backward_raises_clear_error():
    """Second derivatives are not implemented: asking for one must fail loudly,
    not return gradients that silently miss a term."""
    x = torch.randn(X_SHAPE, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, dtype=torch.float64, requires_grad=True)
    y = group_norm(x, 2, weight)
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        dx.pow(2).sum().backward()


@pytest.mark.parametrize("op_name", ["group_norm_forward", "group_norm_backward"])
def test_kernels_registered_for_every_backend(op_name):
    """CPU, CUDA (a real kernel or the 'built without CUDA' stub), Meta (fake kernel) and Autograd."""
    qualified = f"gn_detection::{op_name}"
    for key in ("CPU", "CUDA", "Meta", "Autograd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key), f"{qualified} has no {key} kernel"


def _cuda_forward_args():
    return (_x(), None, None, 2, 1e-5, False)


def _cuda_backward_args():
    x = _x()
    return (torch.randn_like(x), x, torch.zeros(2, 2), torch.ones(2, 2), None, None, 2, False)


@pytest.mark.parametrize("op_name", ["group_norm_forward", "group_norm_backward"])
def test_cuda_kernel_reached_through_dispatcher(op_name):
    """With no GPU here, the CUDA kernel is called with CPU tensors by dispatching
    to the CUDA key directly. Built without CUDA it must say so; built with CUDA
    the real kernel must refuse the CPU tensor with a message that names the
    input's device (cpu) or asks for a CUDA tensor."""
    op = getattr(torch.ops.gn_detection, op_name).default
    args = _cuda_forward_args() if op_name == "group_norm_forward" else _cuda_backward_args()
    cuda_keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError) as excinfo:
        op.redispatch(cuda_keys, *args)
    message = str(excinfo.value)
    if cuda_compiled():
        assert re.search(r"(?i)cuda", message), message
        assert re.search(r"(?i)expect|input is on cpu", message), message
        assert "built without CUDA" not in message
    else:
        assert "built without CUDA" in message, message

