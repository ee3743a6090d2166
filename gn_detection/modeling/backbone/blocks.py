"""ResNet stem and blocks whose norms may apply the following ReLU.

They are detectron2's ``BasicStem``, ``BasicBlock`` and ``BottleneckBlock`` (same
modules, names and initialization); what they add is that, when the norm
computes the ReLU itself (the fused GN+ReLU op), the block does not apply it a
second time, and the optional zero initialization of the last norm's gamma.
"""

import torch.nn.functional as F
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock
from torch import nn

from gn_detection.modeling.norm import NormSpec, fuse_following_relu


def zero_init_gamma(conv: nn.Module, norm: NormSpec) -> None:
    """Zeroes the gamma of ``conv``'s norm, so that a residual block starts as the identity."""
    if not isinstance(conv.norm, (nn.GroupNorm, nn.BatchNorm2d)):
        raise ValueError(
            f"MODEL.GN.ZERO_INIT_LAST_GAMMA needs a norm with a trainable gamma, but {norm.key} is {norm.kind!r}"
        )
    nn.init.zeros_(conv.norm.weight)


class FusedReLUStem(BasicStem):
    """detectron2's ``BasicStem`` (conv 7x7 + norm + ReLU + max pool) with the
    ReLU fused into the norm when ``norm`` allows it."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, *, norm: NormSpec):
        super().__init__(in_channels, out_channels, norm=norm.detectron2_norm)
        self.relu_in_norm = fuse_following_relu(self.conv1, norm)

    def forward(self, x):
        x = self.conv1(x)
        if not self.relu_in_norm:
            x = F.relu_(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class FusedReLUBottleneckBlock(BottleneckBlock):
    """detectron2's ``BottleneckBlock`` with the ReLUs after conv1 and conv2 fused
    into their norms when ``norm`` allows it (the ReLU after the residual sum
    stays a separate op: it follows an addition, not a norm).

    ``zero_init_last_gamma`` starts conv3's norm gamma at zero, so the block
    begins as the identity (needs a norm with a trainable gamma).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        norm: NormSpec,
        stride: int = 1,
        num_groups: int = 1,
        stride_in_1x1: bool = False,
        dilation: int = 1,
        zero_init_last_gamma: bool = False,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm.detectron2_norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        fused1 = fuse_following_relu(self.conv1, norm)
        fused2 = fuse_following_relu(self.conv2, norm)
        self.relu_in_norm = fused1 and fused2
        if zero_init_last_gamma:
            zero_init_gamma(self.conv3, norm)

    def forward(self, x):
        out = self.conv1(x)
        if not self.relu_in_norm:
            out = F.relu_(out)
        out = self.conv2(out)
        if not self.relu_in_norm:
            out = F.relu_(out)
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out += shortcut
        return F.relu_(out)


class FusedReLUBasicBlock(BasicBlock):
    """detectron2's ``BasicBlock`` (two 3x3 convs, ResNet-18/34) with the ReLU
    after conv1 fused into its norm when ``norm`` allows it; ``zero_init_last_gamma``
    starts conv2's norm gamma at zero."""

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: NormSpec, stride: int = 1, zero_init_last_gamma: bool = False
    ):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm.detectron2_norm)
        self.relu_in_norm = fuse_following_relu(self.conv1, norm)
        if zero_init_last_gamma:
            zero_init_gamma(self.conv2, norm)

    def forward(self, x):
        out = self.conv1(x)
        if not self.relu_in_norm:
            out = F.relu_(out)
        out = self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out += shortcut
        return F.relu_(out)
