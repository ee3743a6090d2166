"""``FastRCNNConvFCGNHead``: detectron2's ``FastRCNNConvFCHead`` (convs, each
with norm and ReLU, then fcs with ReLU; the paper's "4conv1fc" head with
NUM_CONV 4, NUM_FC 1) whose conv norms come from gn_detection's factory by
``MODEL.ROI_BOX_HEAD.NORM``, with the ReLU fused into GN where allowed."""

from typing import List

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.box_head import ROI_BOX_HEAD_REGISTRY, FastRCNNConvFCHead

from gn_detection.modeling.norm import NormSpec, fuse_conv_activations, norm_spec


@ROI_BOX_HEAD_REGISTRY.register()
class FastRCNNConvFCGNHead(FastRCNNConvFCHead):
    """Same modules and parameter names as ``FastRCNNConvFCHead`` (box_head.conv1,
    box_head.conv1.norm, ..., box_head.fc1); a conv whose norm applies the ReLU
    drops its own ReLU."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dims: List[int], fc_dims: List[int], conv_norm: NormSpec):
        super().__init__(input_shape, conv_dims=conv_dims, fc_dims=fc_dims, conv_norm=conv_norm.detectron2_norm)
        fuse_conv_activations(self.conv_norm_relus, conv_norm)

    @classmethod
    def from_config(cls, cfg, input_shape):
        args = super().from_config(cfg, input_shape)
        args["conv_norm"] = norm_spec(cfg, "MODEL.ROI_BOX_HEAD.NORM")
        return args
