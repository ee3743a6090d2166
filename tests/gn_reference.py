"""Float64 references and tolerances for the GroupNorm op tests.

Every reference here is PyTorch's own ``torch.nn.functional.group_norm`` (and
``torch.relu``) evaluated in float64 on exact float64 copies of the test's
inputs, never the gn_detection op itself. References are computed on the CPU
whatever device the op ran on, and results are compared there.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}


def formats_for_rank(rank: int) -> list:
    """Memory formats that exist for a tensor of this rank."""
    if rank == 4:
        return ["contiguous", "channels_last"]
    if rank == 5:
        return ["contiguous", "channels_last_3d"]
    return ["contiguous"]


def has_format(t: torch.Tensor, name: str) -> bool:
    return t.is_contiguous(memory_format=MEMORY_FORMATS[name])


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= rtol * |expected| + atol * max|expected|, elementwise.

    The absolute part is scaled by the largest reference value of the tensor,
    so that elements produced by cancellation (a gradient near zero, an output
    where beta cancels the normalized value) are judged against the size of
    the numbers they were computed from.
    """

    rtol: float
    atol: float


# Element-wise results: the output y and the input gradient dx.
#
# float64: the op accumulates in float64; every rounding is ~1e-16 and the sums
#   have at most ~1e5 terms, so errors stay below ~1e-12. 1e-9 leaves room and is
#   still four orders of magnitude below what float32 accumulation would give,
#   so a float64 input silently computed in float32 fails.
# float32: unit roundoff u = 6e-8; group statistics over at most 50176 elements
#   with pairwise/Welford accumulation are accurate to ~1e-7..1e-6 relative,
#   and the result is rounded once more; 1e-5 relative (and 1e-5 of the
#   tensor's scale for cancelled elements) is about ten times that.
# bfloat16: an 8-bit significand, u = 2**-8 = 3.9e-3. The output itself must be
#   rounded to bfloat16, which alone costs up to u relative to the exact value;
#   the float32 arithmetic before it is negligible. 2**-7 relative allows one
#   more rounding of an intermediate, plus 2**-8 of the scale for cancelled elements.
# float16: an 11-bit significand, u = 2**-11 = 4.9e-4; same reasoning: 2**-10
#   relative, 2**-11 of the scale.
ELEMENTWISE_TOL = {
    torch.float64: Tolerance(rtol=1e-9, atol=1e-9),
    torch.float32: Tolerance(rtol=1e-5, atol=1e-5),
    torch.bfloat16: Tolerance(rtol=2.0**-7, atol=2.0**-8),
    torch.float16: Tolerance(rtol=2.0**-10, atol=2.0**-11),
}

# Per-channel reductions dgamma and dbeta: sums over N * HxW elements (up to
# 100352 in the grid). In float32 the accumulated rounding grows with the
# count (about sqrt(n) * u of the sum's scale for random terms, more for long
# sequential runs), so float32 gets 1e-4 of the largest value; the output is
# then rounded to the parameter dtype, so bfloat16/float16 parameters get the
# element-wise tolerance of their dtype.
REDUCTION_TOL = {
    torch.float64: Tolerance(rtol=1e-9, atol=1e-9),
    torch.float32: Tolerance(rtol=1e-4, atol=1e-4),
    torch.bfloat16: Tolerance(rtol=2.0**-7, atol=2.0**-8),
    torch.float16: Tolerance(rtol=2.0**-10, atol=2.0**-11),
}


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance, name: str, scale_floor: float = 0.0
) -> None:
    """Compares `actual` (any dtype) to a float64 `expected` with `tol`; NaNs must coincide.

    The absolute part of the tolerance is relative to max(max|expected|,
    scale_floor): `scale_floor` is the size of the terms the result is made
    of (see `natural_scales`), for results that cancel to almost nothing.
    """
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual64 = actual.detach().cpu().double().reshape(-1)
    expected64 = expected.detach().cpu().double().reshape(-1)
    if not expected64.isfinite().all() or not actual64.isfinite().all():
        actual64, expected64 = _drop_nonfinite(actual64, expected64, name)
    if expected64.numel() == 0:
        return
    scale = max(expected64.abs().max().item(), scale_floor)
    # bound = rtol * |expected| + atol * scale, error = |actual - expected|, in place on big tensors.
    bound = expected64.abs().mul_(tol.rtol).add_(tol.atol * scale)
    error = actual64.sub(expected64).abs_()
    excess = error.sub(bound)
    worst = int(excess.argmax())
    assert excess[worst].item() <= 0, (
        f"{name}: max error {error.max().item():.3e} (scale {scale:.3e}); worst element: "
        f"got {actual64[worst].item():.9g}, expected {expected64[worst].item():.9g}; "
        f"{int((excess > 0).sum())} of {error.numel()} elements outside rtol={tol.rtol:g}, atol={tol.atol:g}*scale"
    )


def _drop_nonfinite(actual64, expected64, name):
    """Checks that NaNs coincide and infinities are equal; returns the finite rest."""
    nan_actual, nan_expected = actual64.isnan(), expected64.isnan()
    assert torch.equal(nan_actual, nan_expected), (
        f"{name}: NaN at {int((nan_actual & ~nan_expected).sum())} unexpected and "
        f"{int((nan_expected & ~nan_actual).sum())} missing positions"
    )
    infinite = expected64.isinf()
    assert torch.equal(actual64[infinite], expected64[infinite]), f"{name}: infinities differ"
    finite = ~(nan_expected | infinite)
    return actual64[finite], expected64[finite]


def natural_scales(x, num_groups, weight, bias, eps, grad_output) -> dict:
    """The size of the terms that y, dx, dweight and dbias are made of, in float64.

    Usually each result is about as large as its terms, but some cancel
    exactly: with one element per group (e.g. 32 groups of a (4, 32) input)
    x - mean = 0, so y = beta and dx = 0, and the float64 reference itself
    returns rounding noise of the size of its terms; comparing against
    max(|reference|, these scales) keeps the tolerance meaningful there.
      y:       |gamma| * xhat + |beta|, xhat having unit variance -> max|gamma| + max|beta|
      dx:      every term carries rstd * gamma * dy -> max(rstd) * max|gamma| * max|dy|
      dweight: sum over a channel of dy * xhat -> max over channels of ||dy_c||_2
      dbias:   sum over a channel of dy -> max over channels of ||dy_c||_2
    """
    gamma = 1.0 if weight is None else weight.detach().double().abs().max().item()
    beta = 0.0 if bias is None else bias.detach().double().abs().max().item()
    _, rstd = reference_statistics(x, num_groups, eps)
    dy = grad_output.detach().cpu().double()
    channels = dy.shape[1]
    per_channel = dy.transpose(0, 1).reshape(channels, -1).norm(dim=1).max().item() if dy.numel() else 0.0
    return {
        "y": gamma + beta,
        "dx": (rstd.max().item() if rstd.numel() else 0.0) * gamma * (dy.abs().max().item() if dy.numel() else 0.0),
        "dweight": per_channel,
        "dbias": per_channel,
    }


def as_double(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """An exact float64 copy of `t` on the CPU (None stays None)."""
    return None if t is None else t.detach().cpu().double()


def _group_norm64(x64, num_groups, w64, b64, eps, relu) -> torch.Tensor:
    y = F.group_norm(x64, num_groups, w64, b64, eps)
    return torch.relu(y) if relu else y


def reference_forward(x, num_groups, weight=None, bias=None, eps=1e-5, relu=False) -> torch.Tensor:
    """GroupNorm (then ReLU) by PyTorch in float64."""
    return _group_norm64(as_double(x), num_groups, as_double(weight), as_double(bias), eps, relu)


def reference_statistics(x, num_groups, eps=1e-5):
    """Per-(sample, group) mean and 1 / sqrt(biased variance + eps) in float64."""
    groups = as_double(x).reshape(x.shape[0], num_groups, -1)
    mean = groups.mean(dim=2)
    var = groups.var(dim=2, unbiased=False)
    return mean, (var + eps).rsqrt()


def reference_gradients(x, num_groups, weight, bias, eps, relu, grad_output) -> Sequence[Optional[torch.Tensor]]:
    """(dx, dweight, dbias) of GroupNorm (then ReLU) by PyTorch's autograd in float64."""
    x64 = as_double(x).requires_grad_()
    w64 = None if weight is None else as_double(weight).requires_grad_()
    b64 = None if bias is None else as_double(bias).requires_grad_()
    y = _group_norm64(x64, num_groups, w64, b64, eps, relu)
    inputs = [t for t in (x64, w64, b64) if t is not None]
    grads = list(torch.autograd.grad(y, inputs, as_double(grad_output)))
    dx = grads.pop(0)
    dw = grads.pop(0) if w64 is not None else None
    db = grads.pop(0) if b64 is not None else None
    return dx, dw, db


def grad_output_away_from_kinks(x, num_groups, weight, bias, eps, relu, memory_format, dtype) -> torch.Tensor:
    """A random upstream gradient, zero where the fused ReLU's input is within
    1e-3 of its kink.

    There the ReLU's derivative is undefined, and a float32 pre-activation of
    1e-7 whose float64 value is -1e-7 would flip the mask of one element and
    change dx by O(1): a zero upstream gradient there makes every correct
    implementation agree. Without ReLU the gradient is random everywhere.
    Drawn on the CPU (the same values on every device), returned on x's device.
    """
    dy = torch.randn(x.shape, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    if relu:
        z = reference_forward(x, num_groups, weight, bias, eps, relu=False)
        dy[z.abs() < 1e-3] = 0
    return dy.to(device=x.device, dtype=dtype).contiguous(memory_format=memory_format)
