"""``Res5GNROIHeads``: detectron2's ``Res5ROIHeads`` (the "C4" RoI heads, where a
res5 stage computes the per-RoI features for the box and mask predictors) whose
res5 blocks are gn_detection's, normalized by ``MODEL.RESNETS.NORM`` like the
backbone (so a GN backbone gets a GN res5 head, as in the paper's C4 models)."""

from detectron2.modeling.backbone.resnet import ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from torch import nn

from gn_detection.modeling.backbone.blocks import FusedReLUBottleneckBlock
from gn_detection.modeling.backbone.resnet_gn import bottleneck_kwargs
from gn_detection.modeling.norm import norm_spec


@ROI_HEADS_REGISTRY.register()
class Res5GNROIHeads(Res5ROIHeads):
    """``Res5ROIHeads`` with a res5 of three ``FusedReLUBottleneckBlock`` (first
    stride 2), same parameter names (roi_heads.res5.0.conv1.norm, ...)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        stage_channel_factor = 2**3  # res5 has 8 times the channels of res2
        out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * stage_channel_factor
        bottleneck_channels = cfg.MODEL.RESNETS.NUM_GROUPS * cfg.MODEL.RESNETS.WIDTH_PER_GROUP * stage_channel_factor
        blocks = ResNet.make_stage(
            FusedReLUBottleneckBlock,
            3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            out_channels=out_channels,
            bottleneck_channels=bottleneck_channels,
            **bottleneck_kwargs(cfg, norm_spec(cfg, "MODEL.RESNETS.NORM")),
        )
        return nn.Sequential(*blocks), out_channels
