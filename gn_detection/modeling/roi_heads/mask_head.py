"""``MaskRCNNConvUpsampleGNHead``: detectron2's ``MaskRCNNConvUpsampleHead``
(NUM_CONV convs with norm and ReLU, a 2x deconv, the per-class predictor) whose
conv norms come from gn_detection's factory by ``MODEL.ROI_MASK_HEAD.NORM``,
with the ReLU fused into GN where allowed."""

from typing import List

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead

from gn_detection.modeling.norm import NormSpec, fuse_conv_activations, norm_spec


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsampleGNHead(MaskRCNNConvUpsampleHead):
    """Same modules and parameter names as ``MaskRCNNConvUpsampleHead``
    (mask_head.mask_fcn1, mask_head.mask_fcn1.norm, ..., deconv, predictor); a
    conv whose norm applies the ReLU drops its own ReLU."""

    @configurable
    def __init__(
        self, input_shape: ShapeSpec, *, num_classes: int, conv_dims: List[int], conv_norm: NormSpec, **kwargs
    ):
        super().__init__(
            input_shape,
            num_classes=num_classes,
            conv_dims=conv_dims,
            conv_norm=conv_norm.detectron2_norm,
            **kwargs,
        )
        fuse_conv_activations(self.conv_norm_relus, conv_norm)

    @classmethod
    def from_config(cls, cfg, input_shape):
        args = super().from_config(cfg, input_shape)
        args["conv_norm"] = norm_spec(cfg, "MODEL.ROI_MASK_HEAD.NORM")
        return args
