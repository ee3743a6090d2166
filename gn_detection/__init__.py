"""gn_detection: Group Normalization for detection and segmentation in detectron2."""

from gn_detection.layers import GroupNorm, convert_group_norm, group_norm

__version__ = "0.1.0"

__all__ = ["GroupNorm", "convert_group_norm", "group_norm"]
