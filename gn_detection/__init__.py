"""gn_detection: Group Normalization for detection and segmentation in detectron2."""

from gn_detection.layers import GroupNorm, convert_group_norm, group_norm
from gn_detection.config import add_gn_config
from gn_detection import modeling  # noqa: F401  (import registers the backbones and RoI heads)

__version__ = "0.1.0"

__all__ = ["GroupNorm", "add_gn_config", "convert_group_norm", "group_norm"]
