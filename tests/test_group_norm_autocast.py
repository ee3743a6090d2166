"""Our GroupNorm under torch.autocast (CPU, bfloat16): the layer keeps its input's
reduced precision, with float32 statistics and arithmetic, and trains through it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gn_detection import GroupNorm

GROUPS = 8


@pytest.mark.parametrize("activation", [None, "relu"])
def test_bfloat16_in_bfloat16_out_with_float32_statistics(activation):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 64, 3, padding=1)
    norm = GroupNorm(GROUPS, 64, activation=activation)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
        norm.bias.normal_(0.0, 0.2)
    x = torch.randn(2, 16, 12, 10) + 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = conv(x)
        z.retain_grad()
        y = norm(z)
        _, mean, rstd = torch.ops.gn_detection.group_norm_forward(z, norm.weight, norm.bias, GROUPS, norm.eps, False)
    assert z.dtype == y.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    assert mean.dtype == rstd.dtype == torch.float32

    groups = z.double().reshape(2, GROUPS, -1)
    torch.testing.assert_close(mean.double(), groups.mean(-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rstd.double(), (groups.var(-1, unbiased=False) + norm.eps).rsqrt(), rtol=1e-5, atol=0)
    exact = F.group_norm(z.double(), GROUPS, norm.weight.double(), norm.bias.double(), norm.eps)
    exact = exact.relu() if activation else exact
    # float32 arithmetic, then one rounding to bfloat16: within half a unit in the last place
    assert ((y.double() - exact).abs() <= exact.abs() * 2.0**-8 * 1.001 + 1e-5).all()

    (y.float() * torch.randn(y.shape)).sum().backward()
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad).all()
    assert norm.weight.grad.dtype == norm.bias.grad.dtype == conv.weight.grad.dtype == torch.float32
