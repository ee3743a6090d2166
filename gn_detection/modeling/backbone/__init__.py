"""Backbones registered with detectron2's BACKBONE_REGISTRY on import."""

from gn_detection.modeling.backbone.fpn_gn import build_resnet_fpn_gn_backbone
from gn_detection.modeling.backbone.resnet_gn import build_resnet_gn_backbone

__all__ = ["build_resnet_fpn_gn_backbone", "build_resnet_gn_backbone"]
