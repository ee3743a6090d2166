"""Layers of gn_detection: the GroupNorm op and its module."""

from gn_detection.layers._extension import cuda_compiled
from gn_detection.layers.group_norm import GroupNorm, convert_group_norm, group_norm

__all__ = ["GroupNorm", "convert_group_norm", "cuda_compiled", "group_norm"]
