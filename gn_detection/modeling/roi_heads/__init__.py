"""RoI heads registered with detectron2's ROI_HEADS, ROI_BOX_HEAD and ROI_MASK_HEAD registries on import."""

from gn_detection.modeling.roi_heads.box_head import FastRCNNConvFCGNHead
from gn_detection.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleGNHead
from gn_detection.modeling.roi_heads.res5_heads import Res5GNROIHeads

__all__ = ["FastRCNNConvFCGNHead", "MaskRCNNConvUpsampleGNHead", "Res5GNROIHeads"]
