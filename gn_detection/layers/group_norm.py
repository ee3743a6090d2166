"""GroupNorm backed by the gn_detection op: a drop-in for ``torch.nn.GroupNorm``
with an optional fused ReLU.

The op (csrc/) computes per-group statistics with float32 accumulation (float64
for float64 inputs) from deviations to a value of the group (a corrected second
pass where that value lies far from the mean) and Chan's pairwise combination,
so inputs far from zero normalize accurately; it works on any
(N, C, *) input, contiguous or channels-last, and saves no output for the
backward of the fused ReLU (the mask is recomputed from the input).
"""

from typing import Optional

import torch
from torch import nn

from gn_detection.layers import _extension  # noqa: F401  (import registers the ops)

_ACTIVATIONS = (None, "relu")


def _check_activation(activation: Optional[str]) -> bool:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    return activation == "relu"


def group_norm(
    input: torch.Tensor,
    num_groups: int,
    weight: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Functional GroupNorm, with the arguments of ``torch.nn.functional.group_norm``.

    ``activation="relu"`` fuses a ReLU into the same pass (forward and backward).
    """
    relu = _check_activation(activation)
    output, _, _ = torch.ops.gn_detection.group_norm_forward(input, weight, bias, num_groups, eps, relu)
    return output


class GroupNorm(nn.GroupNorm):
    """``torch.nn.GroupNorm`` computed by the gn_detection op.

    Same constructor arguments, parameters and state_dict keys as
    ``nn.GroupNorm`` (so checkpoints and weight-decay rules carry over), plus
    ``activation``: None or "relu" for GroupNorm followed by a fused ReLU.

    Under ``torch.autocast`` the op keeps its input's dtype: the bfloat16 or
    float16 output of a convolution gives an output of that dtype, with the
    statistics and the affine arithmetic in float32 and float32 parameters.
    (Autocast runs ``nn.GroupNorm`` on CUDA in float32 instead: inputs cast up,
    a float32 output for the next layer to cast down.) Computing the statistics
    in float32 is what keeps the reduced-precision input accurate; reading and
    writing it in that precision halves the op's memory traffic.
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        activation: Optional[str] = None,
        device=None,
        dtype=None,
    ) -> None:
        _check_activation(activation)
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps, self.activation)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text if self.activation is None else f"{text}, activation={self.activation!r}"


def convert_group_norm(module: nn.Module) -> nn.Module:
    """Replaces every ``nn.GroupNorm`` inside ``module`` (or ``module`` itself)
    by :class:`GroupNorm`, reusing its parameter tensors, so outputs, state_dict
    keys and optimizer references stay the same. Returns the converted module.
    """
    if isinstance(module, nn.GroupNorm) and not isinstance(module, GroupNorm):
        converted = GroupNorm(module.num_groups, module.num_channels, module.eps, affine=False)
        converted.affine = module.affine
        converted.weight = module.weight
        converted.bias = module.bias
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        new_child = convert_group_norm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
