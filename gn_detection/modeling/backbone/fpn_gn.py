"""``build_resnet_fpn_gn_backbone``: detectron2's FPN on gn_detection's ResNet,
with the lateral and output convs normalized as ``MODEL.FPN.NORM`` says (no
ReLU follows them, so nothing is fused there)."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from gn_detection.modeling.backbone.resnet_gn import build_resnet_gn_backbone
from gn_detection.modeling.norm import norm_spec


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_gn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """FPN (P2-P6, P6 by max pooling as in Mask R-CNN) over ``build_resnet_gn_backbone``."""
    return FPN(
        bottom_up=build_resnet_gn_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=norm_spec(cfg, "MODEL.FPN.NORM").detectron2_norm,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
