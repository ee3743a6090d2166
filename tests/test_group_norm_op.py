"""Numerics of the gn_detection GroupNorm op against PyTorch's float64 GroupNorm.

Forward, dx, dweight and dbias over a grid of shapes, groups, memory formats,
affine or not, fused ReLU or not, and dtypes; the saved statistics; gradcheck;
an input far from zero; an outlier first value; empty batches; HxW = 1; views
with a storage offset; NaN and inf. Every test runs on the CPU and, where a GPU
is visible, on CUDA (the ``device`` fixture); CUDA alone adds the current-stream
and run-to-run checks. Inputs are drawn on the CPU, so both devices see the
same values, and references are computed there.
"""

import pytest
import torch
import torch.nn.functional as F

from gn_detection.layers import group_norm
from gn_devices import requires_cuda
from gn_reference import (
    ELEMENTWISE_TOL,
    MEMORY_FORMATS,
    REDUCTION_TOL,
    Tolerance,
    assert_close,
    formats_for_rank,
    grad_output_away_from_kinks,
    has_format,
    natural_scales,
    reference_forward,
    reference_gradients,
    reference_statistics,
)

forward_op = torch.ops.gn_detection.group_norm_forward
backward_op = torch.ops.gn_detection.group_norm_backward


@pytest.fixture(autouse=True)
def _seed():
    """Every test draws its random inputs from the same seed, so failures reproduce."""
    torch.manual_seed(20240)


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SMALL_SHAPES = [(2, 64, 17, 23), (1, 256, 7, 7), (3, 32, 5, 6, 7), (4, 32)]
BIG_SHAPE = (512, 256, 14, 14)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _case_id(shape, groups, fmt, affine, relu, dtype) -> str:
    parts = ["x".join(map(str, shape)), f"G{groups}", fmt, "affine" if affine else "noaffine"]
    parts += ["relu" if relu else "norelu", _dtype_name(dtype)]
    return "-".join(parts)


def _small_cases():
    for shape in SMALL_SHAPES:
        for groups in sorted({1, 2, 32, shape[1]}):
            for fmt in formats_for_rank(len(shape)):
                for affine in (True, False):
                    for relu in (False, True):
                        for dtype in DTYPES:
                            yield pytest.param(
                                shape, groups, fmt, affine, relu, dtype,
                                id=_case_id(shape, groups, fmt, affine, relu, dtype),
                            )


# The big shape (25.7M elements) costs several seconds per case, mostly in the
# float64 reference, so it runs four combinations that still cover both
# layouts, LN/GN/IN groupings, affine or not, the fused ReLU and bfloat16.
_BIG_COMBINATIONS = [
    (32, "contiguous", True, False, torch.float32),
    (32, "channels_last", True, True, torch.float32),
    (1, "channels_last", False, False, torch.float32),
    (256, "contiguous", False, True, torch.bfloat16),
]


def _big_cases():
    for groups, fmt, affine, relu, dtype in _BIG_COMBINATIONS:
        yield pytest.param(
            BIG_SHAPE, groups, fmt, affine, relu, dtype,
            id=_case_id(BIG_SHAPE, groups, fmt, affine, relu, dtype),
        )


def make_inputs(shape, affine, dtype, fmt="contiguous", param_dtype=None, device="cpu"):
    """x ~ 0.5 + 2 N(0, 1) in `fmt`; gamma ~ 1 + 0.5 N(0, 1) (some negative); beta ~ 0.5 N(0, 1).
    Drawn on the CPU, then moved to `device`."""
    param_dtype = param_dtype or dtype
    # Drawn in float32 unless float64 is tested (drawing 25M float64 normals is slow).
    draw_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    x = (0.5 + 2 * torch.randn(shape, dtype=draw_dtype)).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=MEMORY_FORMATS[fmt])
    if not affine:
        return x, None, None
    channels = shape[1]
    weight = (1 + 0.5 * torch.randn(channels, dtype=torch.float64)).to(device=device, dtype=param_dtype)
    bias = (0.5 * torch.randn(channels, dtype=torch.float64)).to(device=device, dtype=param_dtype)
    return x, weight, bias


def run_op(x, groups, weight, bias, eps, relu, grad_output):
    """Our op's output and (dx, dweight, dbias) through autograd."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    x_leaf, weight_leaf, bias_leaf = leaves
    y = group_norm(x_leaf, groups, weight_leaf, bias_leaf, eps=eps, activation="relu" if relu else None)
    inputs = [t for t in leaves if t is not None]
    grads = list(torch.autograd.grad(y, inputs, grad_output))
    dx = grads.pop(0)
    dw = grads.pop(0) if weight is not None else None
    db = grads.pop(0) if bias is not None else None
    return y, dx, dw, db


def check_against_reference(shape, groups, fmt, affine, relu, dtype, param_dtype=None, eps=1e-5, device="cpu"):
    x, weight, bias = make_inputs(shape, affine, dtype, fmt, param_dtype, device)
    dy = grad_output_away_from_kinks(x, groups, weight, bias, eps, relu, MEMORY_FORMATS[fmt], dtype)
    y, dx, dw, db = run_op(x, groups, weight, bias, eps, relu, dy)

    assert y.dtype == dtype and dx.dtype == dtype
    assert y.device == x.device and dx.device == x.device
    assert has_format(y, fmt), f"output strides {y.stride()} are not {fmt}"

    scales = natural_scales(x, groups, weight, bias, eps, dy)
    tol = ELEMENTWISE_TOL[dtype]
    assert_close(y, reference_forward(x, groups, weight, bias, eps, relu), tol, "y", scales["y"])
    ref_dx, ref_dw, ref_db = reference_gradients(x, groups, weight, bias, eps, relu, dy)
    assert_close(dx, ref_dx, tol, "dx", scales["dx"])
    if affine:
        assert dw.dtype == weight.dtype and db.dtype == bias.dtype
        param_tol = REDUCTION_TOL[weight.dtype]
        assert_close(dw, ref_dw, param_tol, "dweight", scales["dweight"])
        assert_close(db, ref_db, param_tol, "dbias", scales["dbias"])


@pytest.mark.parametrize("shape, groups, fmt, affine, relu, dtype", list(_small_cases()))
def test_matches_float64_reference(shape, groups, fmt, affine, relu, dtype, device):
    check_against_reference(shape, groups, fmt, affine, relu, dtype, device=device)


@pytest.mark.parametrize("shape, groups, fmt, affine, relu, dtype", list(_big_cases()))
def test_matches_float64_reference_big(shape, groups, fmt, affine, relu, dtype, device):
    check_against_reference(shape, groups, fmt, affine, relu, dtype, device=device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=_dtype_name)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_half_input_with_float32_parameters(dtype, fmt, device):
    """A float16/bfloat16 input may come with float32 weight and bias (mixed precision);
    dweight and dbias are then float32 and held to float32's reduction tolerance."""
    check_against_reference((2, 64, 9, 11), 32, fmt, True, True, dtype, param_dtype=torch.float32, device=device)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_eps_is_used(eps, device):
    check_against_reference((2, 8, 5, 5), 4, "contiguous", True, False, torch.float64, eps=eps, device=device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=_dtype_name)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_saved_statistics(dtype, fmt, device):
    """mean and rstd: shape (N, G), float32 accumulation (float64 for float64 inputs)."""
    x, weight, bias = make_inputs((3, 64, 6, 7), True, dtype, fmt, device=device)
    _, mean, rstd = forward_op(x, weight, bias, 8, 1e-5, False)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert mean.shape == (3, 8) and rstd.shape == (3, 8)
    assert mean.dtype == expected_dtype and rstd.dtype == expected_dtype
    ref_mean, ref_rstd = reference_statistics(x, 8, 1e-5)
    # The statistics are accumulated, never rounded to the input's dtype:
    # float32-accurate even for a bfloat16 input.
    tol = ELEMENTWISE_TOL[expected_dtype]
    assert_close(mean, ref_mean, tol, "mean", scale_floor=x.double().abs().max().item())
    assert_close(rstd, ref_rstd, tol, "rstd")


_LAYOUT_VARIANTS = ["sliced", "transposed_hw", "channel_slice", "nlc_as_ncl", "expanded_batch"]


def _layout_variant(name, device):
    """Inputs whose strides are neither contiguous nor channels_last, plus
    (N, C, L) stored as (N, L, C), which the op treats as channels-last."""
    if name == "nlc_as_ncl":
        return torch.randn(2, 15, 12, dtype=torch.float64).to(device).transpose(1, 2)
    if name == "expanded_batch":
        return torch.randn(1, 12, 5, 5, dtype=torch.float64).to(device).expand(3, 12, 5, 5)
    base = torch.randn(2, 12, 10, 9, dtype=torch.float64).to(device)
    return {"sliced": base[:, :, ::2, 1:], "transposed_hw": base.transpose(2, 3), "channel_slice": base[:, 2:10]}[name]


@pytest.mark.parametrize("name", _LAYOUT_VARIANTS)
def test_other_strides(name, device):
    """Any strided input gives the right values and gradients (the op copies
    layouts it does not handle natively)."""
    x = _layout_variant(name, device)
    channels = x.shape[1]
    weight = torch.randn(channels, dtype=torch.float64).to(device)
    bias = torch.randn(channels, dtype=torch.float64).to(device)
    dy = torch.randn(x.shape, dtype=torch.float64).to(device)
    y, dx, dw, db = run_op(x, 4, weight, bias, 1e-5, False, dy)
    tol = ELEMENTWISE_TOL[torch.float64]
    assert_close(y, reference_forward(x, 4, weight, bias), tol, "y")
    for got, want, label in zip((dx, dw, db), reference_gradients(x, 4, weight, bias, 1e-5, False, dy),
                                ("dx", "dweight", "dbias")):
        assert_close(got, want, tol, label)


def test_ncl_stored_as_nlc_keeps_its_layout(device):
    """An (N, C, L) input stored as (N, L, C) is channels-last for the op:
    the output keeps the input's strides."""
    x = torch.randn(2, 15, 12).to(device).transpose(1, 2)
    y = group_norm(x, 4)
    assert y.stride() == x.stride()


@pytest.mark.parametrize("x_fmt, dy_fmt", [("channels_last", "contiguous"), ("contiguous", "channels_last")])
def test_grad_output_in_another_layout(x_fmt, dy_fmt, device):
    """The backward must read grad_output in whatever layout autograd hands it."""
    x, weight, bias = make_inputs((2, 32, 9, 10), True, torch.float32, x_fmt, device=device)
    dy = torch.randn(x.shape).to(device).contiguous(memory_format=MEMORY_FORMATS[dy_fmt])
    y, dx, dw, db = run_op(x, 8, weight, bias, 1e-5, False, dy)
    ref = reference_gradients(x, 8, weight, bias, 1e-5, False, dy)
    scales = natural_scales(x, 8, weight, bias, 1e-5, dy)
    assert_close(dx, ref[0], ELEMENTWISE_TOL[torch.float32], "dx", scales["dx"])
    assert_close(dw, ref[1], REDUCTION_TOL[torch.float32], "dweight", scales["dweight"])
    assert_close(db, ref[2], REDUCTION_TOL[torch.float32], "dbias", scales["dbias"])


@pytest.mark.parametrize(
    "shape, fmt",
    [((2, 16, 5, 6), "contiguous"), ((2, 16, 5, 6), "channels_last"), ((2, 16, 3, 4, 5), "channels_last_3d"),
     ((3, 16), "contiguous"), ((2, 16, 7), "contiguous")],
)
@pytest.mark.parametrize("relu", [False, True])
def test_raw_ops_keep_memory_format(shape, fmt, relu, device):
    """Both raw ops return output and grad_input in the input's memory format.
    (Checked on the raw backward op: autograd re-strides a leaf's .grad to the leaf's layout.)"""
    x, weight, bias = make_inputs(shape, True, torch.float32, fmt, device=device)
    y, mean, rstd = forward_op(x, weight, bias, 4, 1e-5, relu)
    assert has_format(y, fmt), f"output strides {y.stride()} for input strides {x.stride()}"
    dy = torch.randn(shape).to(device).contiguous(memory_format=MEMORY_FORMATS[fmt])
    dx, dw, db = backward_op(dy, x, mean, rstd, weight, bias, 4, relu)
    assert has_format(dx, fmt), f"grad_input strides {dx.stride()} for input strides {x.stride()}"
    assert dw.shape == (shape[1],) and db.shape == (shape[1],)
    assert_close(y, reference_forward(x, 4, weight, bias, relu=relu), ELEMENTWISE_TOL[torch.float32], "y")


def _inputs_away_from_relu_kink(shape, groups, affine, device, margin=1e-3, tries=100):
    """float64 inputs whose pre-activation z = GN(x) stays at least `margin` from 0,
    so gradcheck's finite differences (steps of 1e-6, moving z by ~1e-5 at most)
    never cross the ReLU's kink.
    Draws are repeated from the seeded generator until one qualifies."""
    for _ in range(tries):
        x, weight, bias = make_inputs(shape, affine, torch.float64, device=device)
        z = reference_forward(x, groups, weight, bias)
        if z.abs().min().item() > margin:
            return x, weight, bias
    raise AssertionError(f"no input with |z| > {margin} in {tries} draws")


@pytest.mark.parametrize(
    "shape, groups, fmt",
    [((2, 6, 3, 4), 3, "contiguous"), ((2, 6, 3, 4), 3, "channels_last"), ((3, 4), 2, "contiguous"),
     ((2, 4, 2, 3, 2), 2, "channels_last_3d"), ((2, 4, 5), 4, "contiguous"), ((1, 6, 2, 3), 1, "contiguous")],
)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck(shape, groups, fmt, relu, affine, device):
    if relu:
        x, weight, bias = _inputs_away_from_relu_kink(shape, groups, affine, device)
    else:
        x, weight, bias = make_inputs(shape, affine, torch.float64, device=device)
    x = x.contiguous(memory_format=MEMORY_FORMATS[fmt]).requires_grad_()
    activation = "relu" if relu else None
    if affine:
        weight.requires_grad_()
        bias.requires_grad_()

        def fn(x, weight, bias):
            return group_norm(x, groups, weight, bias, activation=activation)

        inputs = (x, weight, bias)
    else:

        def fn(x):
            return group_norm(x, groups, activation=activation)

        inputs = (x,)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def _naive_float32_group_norm(x, groups, weight, bias, eps=1e-5):
    """GroupNorm with the single-pass statistics var = E[x^2] - E[x]^2, in float32."""
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(dim=2, keepdim=True)
    var = (grouped * grouped).mean(dim=2, keepdim=True) - mean * mean
    y = ((grouped - mean) * (var.clamp_min(0) + eps).rsqrt()).reshape(x.shape)
    affine_shape = (1, -1) + (1,) * (x.dim() - 2)
    return y * weight.view(affine_shape) + bias.view(affine_shape)


def test_large_offset_input(device):
    """x = 1e4 + N(0, 1) in float32 normalizes like the float64 reference.

    float32 holds numbers near 1e4 with a spacing of 2**-10 = 9.8e-4, so even a
    perfectly accumulated float32 mean is off by up to 4.9e-4, which shifts the
    normalized output (std 1, |gamma| ~ 1) by as much: 2e-3 absolute is about four
    times that. The same bound fails the textbook float32 formula
    var = E[x^2] - E[x]^2, whose E[x^2] ~ 1e8 carries rounding errors of order 1:
    the check is sharp enough to catch that cancellation.
    """
    shape, groups = (2, 64, 17, 23), 32
    x = (1e4 + torch.randn(shape, dtype=torch.float64)).float().to(device)
    weight = (1 + 0.1 * torch.randn(64)).to(device)
    bias = (0.1 * torch.randn(64)).to(device)
    expected = reference_forward(x, groups, weight, bias)

    error = (group_norm(x, groups, weight, bias).double() - expected).abs().max().item()
    assert error < 2e-3, f"max abs error {error:.3e} on 1e4 + randn"

    naive_error = (_naive_float32_group_norm(x, groups, weight, bias).double() - expected).abs().max().item()
    assert naive_error > 2e-3, f"naive E[x^2]-E[x]^2 error {naive_error:.3e} passes too: the bound is too loose"

    # Gradients. xhat carries the same shift of up to 5e-4; dx depends on it only
    # through group means, dweight = sum(dy * xhat) moves by 5e-4 * sum(dy),
    # i.e. 5e-4 of its natural scale ||dy_c||: 2e-3 of the scale bounds both.
    dy = torch.randn(shape).to(device)
    _, dx, dw, db = run_op(x, groups, weight, bias, 1e-5, False, dy)
    ref_dx, ref_dw, ref_db = reference_gradients(x, groups, weight, bias, 1e-5, False, dy)
    scales = natural_scales(x, groups, weight, bias, 1e-5, dy)
    offset_tol = Tolerance(rtol=0.0, atol=2e-3)
    assert_close(dx, ref_dx, offset_tol, "dx", scales["dx"])
    assert_close(dw, ref_dw, offset_tol, "dweight", scales["dweight"])
    assert_close(db, ref_db, REDUCTION_TOL[torch.float32], "dbias", scales["dbias"])


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(16, 256, 7, 7), (2, 64, 30, 30), (2, 32, 64, 64), (2, 32, 100, 100)],
                         ids=lambda shape: "x".join(map(str, shape)))
def test_outlier_first_value_keeps_variance_exact(shape, fmt, device):
    """The CPU statistics are gathered in one pass of deviations from a value of
    the data (channels-first: each group's first value; channels-last: each
    channel's value in the first row of a block), which is exact only while that
    value lies near the mean; an outlier there must send the group or channel
    through a second pass around the mean found.

    Groups whose first value is 1e3 over N(0, 1) data: one pass relative to it
    loses ~n ulps of the variance (n = 392 to 10000 here, i.e. 2e-5 to 6e-4),
    the second pass a few; float32 rstd must stay within 2e-6 of float64.
    """
    x = torch.randn(shape)
    grouped = x.view(shape[0], 32, -1)
    grouped[:, :, 0] = 1e3
    x = x.to(device).contiguous(memory_format=MEMORY_FORMATS[fmt])
    _, mean, rstd = forward_op(x, None, None, 32, 1e-5, False)
    ref_mean, ref_rstd = reference_statistics(x, 32, 1e-5)
    rstd_error = ((rstd.double() - ref_rstd) / ref_rstd).abs().max().item()
    assert rstd_error < 2e-6, f"rstd relative error {rstd_error:.3g} with an outlier first value, {shape}"
    # The mean comes back as first value + mean(x - first value): float32's
    # spacing at 1e3 (6.1e-5) bounds its accuracy.
    mean_error = (mean.double() - ref_mean).abs().max().item()
    assert mean_error < 2e-4, f"mean error {mean_error:.3g} with an outlier first value, {shape}"


@pytest.mark.parametrize("shape, fmt", [((0, 32, 5, 5), "contiguous"), ((0, 32, 5, 5), "channels_last"),
                                        ((0, 32), "contiguous"), ((0, 32, 2, 3, 4), "channels_last_3d")])
@pytest.mark.parametrize("relu", [False, True])
def test_empty_batch(shape, fmt, relu, device):
    """N = 0: an empty output of the right shape, an empty dx, zero dweight and dbias."""
    x = torch.randn(shape).to(device).contiguous(memory_format=MEMORY_FORMATS[fmt]).requires_grad_()
    weight = torch.randn(32).to(device).requires_grad_()
    bias = torch.randn(32).to(device).requires_grad_()
    y = group_norm(x, 8, weight, bias, activation="relu" if relu else None)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert weight.grad is not None and torch.equal(weight.grad, torch.zeros(32, device=device))
    assert bias.grad is not None and torch.equal(bias.grad, torch.zeros(32, device=device))
    _, mean, rstd = forward_op(x.detach(), weight.detach(), bias.detach(), 8, 1e-5, relu)
    assert mean.shape == (0, 8) and rstd.shape == (0, 8)


def _poison(x, kind):
    """Puts NaN or inf into one group of sample 0 (channel 5 lies in group 1 of 4)."""
    x = x.clone()
    value = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[kind]
    x[0, 5, 1, 2] = value
    return x


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("relu", [False, True])
def test_nonfinite_input_propagates_like_pytorch(kind, fmt, relu, device):
    """A NaN or inf in x spoils exactly its own (sample, group), as in
    F.group_norm (then ReLU): same NaN positions, same values elsewhere."""
    x, weight, bias = make_inputs((2, 16, 4, 5), True, torch.float32, fmt, device=device)
    x = _poison(x, kind).contiguous(memory_format=MEMORY_FORMATS[fmt])
    expected = reference_forward(x, 4, weight, bias, relu=relu)
    assert expected.isnan().any(), "the reference itself should produce NaN here"
    ours = group_norm(x, 4, weight, bias, activation="relu" if relu else None)
    assert_close(ours, expected, ELEMENTWISE_TOL[torch.float32], "y")


@pytest.mark.parametrize("param, value", [("weight", "nan"), ("bias", "nan"), ("bias", "inf")])
def test_nonfinite_parameters_propagate_like_pytorch(param, value, device):
    x, weight, bias = make_inputs((2, 16, 4, 5), True, torch.float32, device=device)
    params = {"weight": weight, "bias": bias}
    params[param][3] = float(value)
    expected = reference_forward(x, 4, params["weight"], params["bias"])
    ours = group_norm(x, 4, params["weight"], params["bias"])
    assert_close(ours, expected, ELEMENTWISE_TOL[torch.float32], "y")


def test_constant_group(device):
    """A group with zero variance normalizes to beta (rstd = 1/sqrt(eps)) with finite gradients."""
    x, weight, bias = make_inputs((2, 8, 4, 4), True, torch.float32, device=device)
    x[1, 2:4] = 0.3  # group 1 of sample 1 (channels 2 and 3) is constant
    dy = torch.randn(x.shape).to(device)
    y, dx, dw, db = run_op(x, 4, weight, bias, 1e-5, False, dy)
    scales = natural_scales(x, 4, weight, bias, 1e-5, dy)
    ref = reference_gradients(x, 4, weight, bias, 1e-5, False, dy)
    assert_close(y, reference_forward(x, 4, weight, bias), ELEMENTWISE_TOL[torch.float32], "y", scales["y"])
    assert_close(dx, ref[0], ELEMENTWISE_TOL[torch.float32], "dx", scales["dx"])
    assert_close(dw, ref[1], REDUCTION_TOL[torch.float32], "dweight", scales["dweight"])
    assert_close(db, ref[2], REDUCTION_TOL[torch.float32], "dbias", scales["dbias"])


def test_functional_matches_raw_op_and_leaves_input_alone(device):
    """group_norm() is the raw op's first output; neither modifies its input."""
    x, weight, bias = make_inputs((2, 16, 5, 5), True, torch.float32, device=device)
    saved = x.clone()
    y = group_norm(x, 4, weight, bias, eps=1e-3, activation="relu")
    raw, _, _ = forward_op(x, weight, bias, 4, 1e-3, True)
    assert torch.equal(y, raw)
    assert torch.equal(x, saved)
    assert (y >= 0).all()
    assert_close(y, reference_forward(x, 4, weight, bias, 1e-3, relu=True), ELEMENTWISE_TOL[torch.float32], "y")


def test_fused_relu_matches_pytorch_group_norm_then_relu_in_float32(device):
    """The fused form against F.group_norm followed by F.relu, both in float32
    (not only against float64): the two agree to float32 accuracy."""
    x, weight, bias = make_inputs((2, 32, 8, 8), True, torch.float32, device=device)
    fused = group_norm(x, 8, weight, bias, activation="relu")
    unfused = F.relu(F.group_norm(x, 8, weight, bias))
    difference = (fused - unfused).abs().max().item()
    assert difference <= 1e-5 * unfused.abs().max().item(), f"fused vs unfused: {difference:.3e}"


# Inputs with HxW = 1: a group is D = C / G contiguous elements in either layout,
# and the kernels give them a path of their own (CUDA: a segment of D lanes
# rounded up to a power of two per group). D = 1, 3, 8, 24, 32, 96 cover
# segments of 1 to 32 lanes, some idle lanes, and lanes looping over a group;
# (8000, 256) has more groups than the CUDA grid has segments. They run in
# float64, which checks the indexing and reductions exactly; float32 runs
# where D >= 8: among thousands of groups of 2 or 3 values some have a variance
# so small that rstd (up to 1 / sqrt(eps)) magnifies the float32 rounding of
# their mean beyond the float32 tolerance, in any float32 implementation.
_HXW1_CASES = [
    ((300, 64), 64, "contiguous", torch.float64),
    ((300, 96), 32, "contiguous", torch.float64),
    ((300, 64), 8, "contiguous", torch.float64),
    ((300, 120), 5, "contiguous", torch.float64),
    ((300, 64), 2, "contiguous", torch.float64),
    ((300, 96), 1, "contiguous", torch.float64),
    ((64, 256, 1, 1), 32, "channels_last", torch.float64),
    ((8000, 256), 32, "contiguous", torch.float64),
    ((300, 64), 8, "contiguous", torch.float32),
    ((64, 256, 1, 1), 32, "channels_last", torch.float32),
    ((8000, 256), 32, "contiguous", torch.float32),
]


@pytest.mark.parametrize("relu", [False, True], ids=["norelu", "relu"])
@pytest.mark.parametrize(
    "shape, groups, fmt, dtype", _HXW1_CASES,
    ids=[f"{'x'.join(map(str, c[0]))}-G{c[1]}-{c[2]}-{_dtype_name(c[3])}" for c in _HXW1_CASES],
)
def test_spatial_size_one(shape, groups, fmt, dtype, relu, device):
    check_against_reference(shape, groups, fmt, True, relu, dtype, device=device)


def test_spatial_size_one_bfloat16_with_float32_parameters(device):
    check_against_reference((300, 96), 32, "contiguous", True, True, torch.bfloat16, torch.float32, device=device)


def _view_at_offset(t: torch.Tensor, offset_bytes: int) -> torch.Tensor:
    """A copy of `t` with t's strides that starts `offset_bytes` into a larger buffer."""
    elements = offset_bytes // t.element_size()
    buffer = torch.zeros(t.numel() + elements, dtype=t.dtype, device=t.device)
    view = buffer[elements:].as_strided(t.shape, t.stride())
    view.copy_(t)
    return view


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned16", "one_element_in"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_dtype_name)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_views_with_a_storage_offset(fmt, dtype, aligned, device):
    """Input and grad_output that start inside their storage: 16 bytes in (vector
    loads stay aligned) or one element in (not 16-byte aligned: the CUDA kernels
    must fall back to scalar loads)."""
    offset_bytes = 16 if aligned else torch.tensor([], dtype=dtype).element_size()
    shape, groups = (2, 32, 6, 8), 8  # C and HxW multiples of every vector width
    x0, weight, bias = make_inputs(shape, True, dtype, fmt, device=device)
    dy0 = grad_output_away_from_kinks(x0, groups, weight, bias, 1e-5, True, MEMORY_FORMATS[fmt], dtype)
    x, dy = _view_at_offset(x0, offset_bytes), _view_at_offset(dy0, offset_bytes)
    assert x.storage_offset() > 0 and has_format(x, fmt) and torch.equal(x, x0)
    assert (x.data_ptr() % 16 == 0) == aligned

    y, mean, rstd = forward_op(x, weight, bias, groups, 1e-5, True)
    dx, dw, db = backward_op(dy, x, mean, rstd, weight, bias, groups, True)
    scales = natural_scales(x0, groups, weight, bias, 1e-5, dy0)
    tol = ELEMENTWISE_TOL[dtype]
    assert_close(y, reference_forward(x0, groups, weight, bias, relu=True), tol, "y", scales["y"])
    ref_dx, ref_dw, ref_db = reference_gradients(x0, groups, weight, bias, 1e-5, True, dy0)
    assert_close(dx, ref_dx, tol, "dx", scales["dx"])
    assert_close(dw, ref_dw, REDUCTION_TOL[dtype], "dweight", scales["dweight"])
    assert_close(db, ref_db, REDUCTION_TOL[dtype], "dbias", scales["dbias"])


@requires_cuda
def test_cuda_runs_on_the_current_stream():
    """The op launches its kernels on the caller's current stream. The input is
    written on a side stream after a long GPU wait: kernels on that stream see
    it; kernels launched on another stream would read the zeros before it."""
    src, weight, bias = make_inputs((8, 64, 32, 32), True, torch.float32, device="cuda")
    dy = torch.randn(src.shape).cuda()
    x = torch.zeros_like(src)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # tens of milliseconds of GPU time on this stream
        x.copy_(src)
        y, mean, rstd = forward_op(x, weight, bias, 32, 1e-5, False)
        dx, dw, db = backward_op(dy, x, mean, rstd, weight, bias, 32, False)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    scales = natural_scales(src, 32, weight, bias, 1e-5, dy)
    tol = ELEMENTWISE_TOL[torch.float32]
    assert_close(y, reference_forward(src, 32, weight, bias), tol, "y", scales["y"])
    ref_dx, ref_dw, ref_db = reference_gradients(src, 32, weight, bias, 1e-5, False, dy)
    assert_close(dx, ref_dx, tol, "dx", scales["dx"])
    assert_close(dw, ref_dw, REDUCTION_TOL[torch.float32], "dweight", scales["dweight"])
    assert_close(db, ref_db, REDUCTION_TOL[torch.float32], "dbias", scales["dbias"])


@requires_cuda
@pytest.mark.parametrize(
    "shape, fmt, dtype",
    [((2, 256, 100, 168), "channels_last", torch.bfloat16), ((2, 256, 100, 168), "contiguous", torch.float32),
     ((1, 32, 64, 64), "contiguous", torch.float32), ((256, 256, 14, 14), "channels_last", torch.float32),
     ((4096, 256), "contiguous", torch.float32)],
    ids=["fpn_p3_cl_bf16", "fpn_p3_f32", "small", "mask_head_cl", "nc"],
)
def test_cuda_results_equal_run_to_run(shape, fmt, dtype):
    """No atomics: three runs of forward and backward give bit-identical outputs,
    statistics and gradients (shapes whose reductions are split across blocks)."""
    x, weight, bias = make_inputs(shape, True, dtype, fmt, param_dtype=torch.float32, device="cuda")
    dy = torch.randn(shape).to(device="cuda", dtype=dtype).contiguous(memory_format=MEMORY_FORMATS[fmt])
    runs = []
    for _ in range(3):
        y, mean, rstd = forward_op(x, weight, bias, 32, 1e-5, True)
        runs.append((y, mean, rstd) + tuple(backward_op(dy, x, mean, rstd, weight, bias, 32, True)))
    names = ["y", "mean", "rstd", "dx", "dweight", "dbias"]
    for run in runs[1:]:
        for name, first, again in zip(names, runs[0], run):
            assert torch.equal(first, again), f"{name} differs between runs"
