"""detectron2 components of gn_detection. Importing this package registers the
backbones and RoI heads with detectron2's registries."""

from gn_detection.modeling.backbone import build_resnet_fpn_gn_backbone, build_resnet_gn_backbone
from gn_detection.modeling.norm import NORM_CHOICES, NormSpec, norm_spec
from gn_detection.modeling.roi_heads import FastRCNNConvFCGNHead, MaskRCNNConvUpsampleGNHead, Res5GNROIHeads

__all__ = [
    "NORM_CHOICES",
    "FastRCNNConvFCGNHead",
    "MaskRCNNConvUpsampleGNHead",
    "NormSpec",
    "Res5GNROIHeads",
    "build_resnet_fpn_gn_backbone",
    "build_resnet_gn_backbone",
    "norm_spec",
]
