"""The normalization factory: turns a ``*.NORM`` config value plus ``MODEL.GN``
into normalization layers, so that every comparison of the paper (GN, LN, IN,
frozen BN, BN, none) is one config change.

"GN", "LN" (one group) and "IN" (one channel per group) build gn_detection's
``GroupNorm`` (or ``torch.nn.GroupNorm`` with ``MODEL.GN.IMPL: "torch"``);
"FrozenBN", "BN" and "" (no norm) are handed to detectron2 as the strings it
already understands, so those layers are exactly detectron2's own.
"""

from dataclasses import dataclass
from functools import reduce
from typing import Callable, Optional, Union

from detectron2.layers import get_norm
from torch import nn

from gn_detection.layers import GroupNorm

NORM_CHOICES = ("GN", "LN", "IN", "FrozenBN", "BN", "")
GROUP_NORM_KINDS = ("GN", "LN", "IN")
IMPL_CHOICES = ("custom", "torch")


@dataclass(frozen=True)
class NormSpec:
    """One normalization choice: the value of the config key ``key`` and the
    ``MODEL.GN`` settings. Call it with a channel count to build a layer."""

    kind: str
    key: str
    num_groups: int = 32
    dim_per_group: int = -1
    eps: float = 1e-5
    impl: str = "custom"
    fuse_relu: bool = True

    @property
    def is_group_norm(self) -> bool:
        """Whether layers are GroupNorm (GN, LN or IN)."""
        return self.kind in GROUP_NORM_KINDS

    @property
    def fuses_relu(self) -> bool:
        """Whether a ReLU after this norm is computed inside it (custom GN op with FUSE_RELU)."""
        return self.is_group_norm and self.impl == "custom" and self.fuse_relu

    def groups(self, channels: int) -> int:
        """The number of groups for a layer of ``channels`` channels."""
        if self.kind == "LN":
            return 1
        if self.kind == "IN":
            return channels
        if self.num_groups > 0:
            groups, setting = self.num_groups, f"MODEL.GN.NUM_GROUPS={self.num_groups}"
            divides = channels % groups == 0
        else:
            groups, setting = channels // self.dim_per_group, f"MODEL.GN.DIM_PER_GROUP={self.dim_per_group}"
            divides = channels % self.dim_per_group == 0
        if groups < 1 or not divides:
            raise ValueError(
                f"{setting} does not split {channels} channels into equal groups "
                f"(a layer normalized with {self.key}={self.kind!r})"
            )
        return groups

    def __call__(self, channels: int) -> Optional[nn.Module]:
        """Builds the norm layer for ``channels`` channels (no activation)."""
        return self.layer(channels)

    def layer(self, channels: int, relu: bool = False) -> Optional[nn.Module]:
        """Builds the norm layer; ``relu=True`` (only when :attr:`fuses_relu`)
        makes it apply the ReLU that follows it."""
        if relu and not self.fuses_relu:
            raise ValueError(
                f"{self.key}={self.kind!r} with MODEL.GN.IMPL={self.impl!r} and "
                f"MODEL.GN.FUSE_RELU={self.fuse_relu} does not fuse a ReLU"
            )
        if not self.is_group_norm:
            return get_norm(self.kind, channels)
        groups = self.groups(channels)
        if self.impl == "torch":
            return nn.GroupNorm(groups, channels, eps=self.eps)
        return GroupNorm(groups, channels, eps=self.eps, activation="relu" if relu else None)

    @property
    def detectron2_norm(self) -> Union[str, Callable[[int], Optional[nn.Module]]]:
        """The ``norm`` argument for detectron2's layers: the plain string for the
        norms detectron2 builds itself (so that, e.g., FPN keeps its conv bias when
        there is no norm), else this spec."""
        return self if self.is_group_norm else self.kind


def fuse_following_relu(conv: nn.Conv2d, spec: NormSpec) -> bool:
    """Lets the norm of ``conv`` (a detectron2 ``Conv2d`` built with ``spec``) apply
    the ReLU that follows it, when ``spec`` fuses ReLUs: its norm is replaced by a
    fresh one with the fused ReLU (norms start at gamma 1, beta 0, so nothing is
    lost). Returns whether it did; the caller must then skip its own ReLU."""
    if not spec.fuses_relu:
        return False
    conv.norm = spec.layer(conv.out_channels, relu=True)
    return True


def fuse_conv_activations(convs, spec: NormSpec) -> None:
    """For detectron2 ``Conv2d`` layers that apply a ReLU as their ``activation``
    (the convs of detectron2's RoI heads): moves each ReLU into the conv's norm
    where ``spec`` fuses ReLUs, and drops it from the conv."""
    for conv in convs:
        if fuse_following_relu(conv, spec):
            conv.activation = None


def _lookup(cfg, key: str):
    try:
        return reduce(getattr, key.split("."), cfg)
    except AttributeError:
        missing = "MODEL.GN" if key.startswith("MODEL.GN") else key
        raise KeyError(
            f"config has no {missing}; call gn_detection.add_gn_config(cfg) before merging a gn_detection config"
        ) from None


def norm_spec(cfg, key: str) -> NormSpec:
    """The :class:`NormSpec` of config key ``key`` (e.g. "MODEL.FPN.NORM"),
    checking the value and the ``MODEL.GN`` settings it uses."""
    kind = _lookup(cfg, key)
    if kind not in NORM_CHOICES:
        raise ValueError(f"{key} must be one of {NORM_CHOICES}, got {kind!r}")
    num_groups = _lookup(cfg, "MODEL.GN.NUM_GROUPS")
    dim_per_group = _lookup(cfg, "MODEL.GN.DIM_PER_GROUP")
    eps = _lookup(cfg, "MODEL.GN.EPS")
    impl = _lookup(cfg, "MODEL.GN.IMPL")
    if (num_groups > 0) == (dim_per_group > 0):
        raise ValueError(
            "exactly one of MODEL.GN.NUM_GROUPS and MODEL.GN.DIM_PER_GROUP must be positive, "
            f"got {num_groups} and {dim_per_group}"
        )
    if not eps > 0:
        raise ValueError(f"MODEL.GN.EPS must be positive, got {eps}")
    if impl not in IMPL_CHOICES:
        raise ValueError(f"MODEL.GN.IMPL must be one of {IMPL_CHOICES}, got {impl!r}")
    return NormSpec(
        kind=kind,
        key=key,
        num_groups=num_groups,
        dim_per_group=dim_per_group,
        eps=float(eps),
        impl=impl,
        fuse_relu=bool(_lookup(cfg, "MODEL.GN.FUSE_RELU")),
    )
