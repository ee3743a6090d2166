"""Bad arguments, device registrations and unsupported uses of the GroupNorm op.

Every bad input must raise the documented error type (ValueError for shapes,
groups and eps, TypeError for dtypes, RuntimeError for devices) with a message
that names the problem and the shapes. The C++ kernels (eager) and the Python
fake kernels that torch.compile and torch.export trace with implement these
rules twice, so every case runs through both and must give the same error:
the same type and the same message (up to how C++ and Python spell dtypes).
Runs on the CPU and, where a GPU is visible, on CUDA.
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


def _x(device, dtype=torch.float32, shape=X_SHAPE):
    return torch.randn(shape).to(device=device, dtype=dtype)


def _ones(device, n=6, dtype=torch.float32):
    return torch.ones(n, dtype=dtype, device=device)


def _forward(x, weight=None, bias=None, groups=2, eps=1e-5):
    return {"input": x, "weight": weight, "bias": bias, "num_groups": groups, "eps": eps, "relu": False}


# (id, builder of the forward arguments on a device, exception type, regexes the message must match)
FORWARD_CASES = [
    ("groups_not_dividing_C", lambda d: _forward(_x(d), groups=4), ValueError,
     [r"C=6", r"num_groups=4", re.escape("[2, 6, 4, 4]")]),
    ("zero_groups", lambda d: _forward(_x(d), groups=0), ValueError, [r"num_groups must be positive, got 0"]),
    ("negative_groups", lambda d: _forward(_x(d), groups=-2), ValueError, [r"num_groups must be positive, got -2"]),
    ("negative_eps", lambda d: _forward(_x(d), eps=-0.1), ValueError, [r"eps must be non-negative, got -0\.1"]),
    ("nan_eps", lambda d: _forward(_x(d), eps=float("nan")), ValueError, [r"eps must be non-negative, got nan"]),
    ("one_dimensional_input", lambda d: _forward(torch.randn(6, device=d)), ValueError,
     [r"at least 2 dimensions", re.escape("[6]")]),
    ("weight_too_short", lambda d: _forward(_x(d), _ones(d, 5)), ValueError,
     [r"weight must have shape \(6,\)", re.escape("[2, 6, 4, 4]"), r"got \[5\]"]),
    ("bias_too_long", lambda d: _forward(_x(d), _ones(d), _ones(d, 7)), ValueError,
     [r"bias must have shape \(6,\)", r"got \[7\]"]),
    ("weight_two_dimensional", lambda d: _forward(_x(d), _ones(d).view(6, 1)), ValueError,
     [r"weight must have shape \(6,\)", r"got \[6, 1\]"]),
    ("integer_input", lambda d: _forward(torch.randint(0, 5, X_SHAPE, device=d)), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(Long|int64)"]),
    ("bool_input", lambda d: _forward(torch.ones(X_SHAPE, dtype=torch.bool, device=d)), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(Bool|bool)"]),
    ("complex_input", lambda d: _forward(torch.randn(X_SHAPE, dtype=torch.complex64, device=d)), TypeError,
     [r"float32, float64, float16 or bfloat16 input", r"(ComplexFloat|complex64)"]),
    ("float64_weight_for_float32_input", lambda d: _forward(_x(d), _ones(d, dtype=torch.float64)), TypeError,
     [r"weight dtype", r"(Double|float64)", r"(Float|float32)"]),
    ("integer_bias", lambda d: _forward(_x(d), None, _ones(d, dtype=torch.int32)), TypeError,
     [r"bias dtype", r"(Int|int32)"]),
    ("bfloat16_weight_for_float32_input", lambda d: _forward(_x(d), _ones(d, dtype=torch.bfloat16)), TypeError,
     [r"weight dtype", r"(BFloat16|bfloat16)"]),
    ("float16_weight_for_bfloat16_input",
     lambda d: _forward(_x(d, torch.bfloat16), _ones(d, dtype=torch.float16)), TypeError,
     [r"weight dtype", r"(Half|float16)"]),
    ("weight_and_bias_dtypes_differ",
     lambda d: _forward(_x(d, torch.bfloat16), _ones(d, dtype=torch.bfloat16), _ones(d)), TypeError,
     [r"weight dtype", r"bias dtype", r"(BFloat16|bfloat16)", r"(Float|float32)"]),
    ("weight_dtype_wrong_and_bias_dtype_differs",
     lambda d: _forward(_x(d), _ones(d, dtype=torch.float64), _ones(d)), TypeError,
     [r"weight dtype (Double|torch\.float64) must be the input dtype"]),
]


def _valid_backward(device):
    x = _x(device)
    y, mean, rstd = forward_op(x, None, None, 2, 1e-5, False)
    return {"grad_output": torch.randn_like(y), "input": x, "mean": mean, "rstd": rstd,
            "weight": None, "bias": None, "num_groups": 2, "relu": False}


def _backward(device, **override):
    args = _valid_backward(device)
    args.update(override)
    return args


BACKWARD_CASES = [
    ("grad_output_shape", lambda d: _backward(d, grad_output=torch.randn(2, 6, 4, 5, device=d)), ValueError,
     [r"grad_output shape \[2, 6, 4, 5\] must equal input shape \[2, 6, 4, 4\]"]),
    ("grad_output_dtype", lambda d: _backward(d, grad_output=_x(d, torch.float64)), TypeError,
     [r"grad_output dtype", r"(Double|float64)"]),
    ("mean_shape", lambda d: _backward(d, mean=torch.zeros(2, 3, device=d)), ValueError,
     [r"mean must have shape \(N, num_groups\) = \(2, 2\)", r"got \[2, 3\]"]),
    ("rstd_dtype", lambda d: _backward(d, rstd=torch.ones(2, 2, dtype=torch.float64, device=d)), TypeError,
     [r"rstd dtype", r"(Double|float64)"]),
    ("groups", lambda d: _backward(d, num_groups=4), ValueError, [r"C=6", r"num_groups=4"]),
    ("weight_shape", lambda d: _backward(d, weight=_ones(d, 5)), ValueError, [r"weight must have shape \(6,\)"]),
]


def _two_device_cases(device):
    """Forward arguments on two devices. On the CPU the other device is meta (the
    dispatcher then picks the fake kernel, so the CPU kernel's own check is
    reached by dispatching to it directly); on CUDA it is the CPU, both ways."""
    if device == "cpu":
        return [("weight_on_meta", _forward(_x("cpu"), _ones("meta")), r"weight is on meta but input is on cpu")]
    return [
        ("weight_on_cpu", _forward(_x(device), _ones("cpu")), r"weight is on cpu but input is on cuda"),
        ("bias_on_cpu", _forward(_x(device), None, _ones("cpu")), r"bias is on cpu but input is on cuda"),
        ("input_on_cpu", _forward(_x("cpu"), _ones(device)), r"weight is on cuda(:\d)? but input is on cpu"),
    ]


_SCALAR_TYPE_NAMES = {"Float": "torch.float32", "Double": "torch.float64", "Half": "torch.float16",
                      "BFloat16": "torch.bfloat16", "Long": "torch.int64", "Int": "torch.int32",
                      "Bool": "torch.bool", "ComplexFloat": "torch.complex64"}


def _python_spelling(message: str) -> str:
    """A C++ message with dtypes spelled as Python spells them (Float -> torch.float32)."""
    return re.sub(r"\b(" + "|".join(_SCALAR_TYPE_NAMES) + r")\b", lambda m: _SCALAR_TYPE_NAMES[m.group(1)], message)


def _check_error(excinfo, patterns):
    message = str(excinfo.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"message {message!r} does not match {pattern!r}"


def _run_fake(op, args):
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fakes = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
        op(*fakes.values())


def _eager_and_fake_agree(op, args, error, patterns):
    with pytest.raises(error) as eager:
        op(*args.values())
    _check_error(eager, patterns)
    with pytest.raises(error) as fake:
        _run_fake(op, args)
    _check_error(fake, patterns)
    assert _python_spelling(str(eager.value)) == str(fake.value), "eager and traced messages differ"


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_rejects_bad_arguments(case, device):
    """Eager (C++) and fake (Python, what torch.compile/export trace) raise the same error."""
    _, build, error, patterns = case
    _eager_and_fake_agree(forward_op, build(device), error, patterns)


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=[c[0] for c in BACKWARD_CASES])
def test_backward_rejects_bad_arguments(case, device):
    _, build, error, patterns = case
    _eager_and_fake_agree(backward_op, build(device), error, patterns)


def test_tensors_on_two_devices_raise_runtime_error(device):
    """A RuntimeError that names both devices, eager and traced."""
    for name, args, pattern in _two_device_cases(device):
        with pytest.raises(RuntimeError, match=pattern + r".*one device"):
            forward_op(*args.values())
        if device == "cpu":
            cpu_keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
            with pytest.raises(RuntimeError, match=pattern + r".*one device"):
                forward_op.default.redispatch(cpu_keys, *args.values())
        else:
            with pytest.raises(RuntimeError, match=pattern + r".*one device"):
                _run_fake(forward_op, args)


class _NegativeEps(torch.nn.Module):
    def forward(self, t):
        return group_norm(t, 2, eps=-0.1)


@pytest.mark.parametrize("trace", ["compile", "export"])
def test_traced_program_rejects_negative_eps(trace, device):
    """A program traced by torch.compile(fullgraph=True) or torch.export checks
    eps as eager does (the fake kernel raises while tracing)."""
    x = _x(device)
    with pytest.raises(Exception, match=r"eps must be non-negative, got -0\.1"):
        if trace == "compile":
            torch._dynamo.reset()
            torch.compile(_NegativeEps(), fullgraph=True, backend="eager")(x)
        else:
            torch.export.export(_NegativeEps(), (x,))


def test_bad_activation():
    with pytest.raises(ValueError, match=r"activation must be one of .*'gelu'"):
        group_norm(_x("cpu"), 2, activation="gelu")
    with pytest.raises(ValueError, match=r"activation must be one of .*'relu_'"):
        GroupNorm(2, 6, activation="relu_")


def test_module_with_channels_not_divisible_raises_value_error():
    """nn.GroupNorm's own constructor check still applies to the subclass."""
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(4, 6)


def test_module_called_on_wrong_channel_count(device):
    module = GroupNorm(2, 6).to(device)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\).*got \[6\]"):
        module(torch.randn(2, 8, 3, 3, device=device))


def test_double_backward_raises_clear_error(device):
    """Second derivatives are not implemented: asking for one must fail loudly,
    not return gradients that silently miss a term."""
    x = torch.randn(X_SHAPE, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
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
    return (_x("cpu"), None, None, 2, 1e-5, False)


def _cuda_backward_args():
    x = _x("cpu")
    return (torch.randn_like(x), x, torch.zeros(2, 2), torch.ones(2, 2), None, None, 2, False)


@pytest.mark.parametrize("op_name", ["group_norm_forward", "group_norm_backward"])
def test_cuda_kernel_reached_through_dispatcher(op_name):
    """The CUDA kernel called with CPU tensors (by dispatching to the CUDA key
    directly). Built without CUDA it must say so; built with CUDA the real
    kernel must refuse the CPU tensor with a message that names the input's
    device (cpu)."""
    op = getattr(torch.ops.gn_detection, op_name).default
    args = _cuda_forward_args() if op_name == "group_norm_forward" else _cuda_backward_args()
    cuda_keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with pytest.raises(RuntimeError) as excinfo:
        op.redispatch(cuda_keys, *args)
    message = str(excinfo.value)
    if cuda_compiled():
        assert re.search(r"(?i)cuda", message), message
        assert re.search(r"input is on cpu", message), message
        assert "built without CUDA" not in message
    else:
        assert "built without CUDA" in message, message

