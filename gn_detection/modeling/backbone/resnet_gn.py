"""``build_resnet_gn_backbone``: detectron2's ResNet (the "C4" backbone when
``MODEL.RESNETS.OUT_FEATURES`` is ["res4"]) with its norm chosen by
``MODEL.RESNETS.NORM`` through gn_detection's factory, in the stem and in every
block, and the norm+ReLU pairs fused where the factory allows.

Depths 18 and 34 use basic blocks, as in detectron2; unlike detectron2 they
accept any ``RES2_OUT_CHANNELS`` (detectron2 pins 64 to match ImageNet
checkpoints), so narrow networks can be trained from scratch, as the CPU demo does.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet

from gn_detection.modeling.backbone.blocks import FusedReLUBasicBlock, FusedReLUBottleneckBlock, FusedReLUStem
from gn_detection.modeling.norm import NormSpec, norm_spec

BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BASIC_BLOCK_DEPTHS = (18, 34)


def bottleneck_kwargs(cfg, norm: NormSpec) -> dict:
    """Arguments shared by every bottleneck block built from ``cfg``
    (backbone stages and the res5 head of C4 models)."""
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convolutions are not supported by "
            "gn_detection's ResNet; set it to [False, False, False, False]"
        )
    return {
        "norm": norm,
        "num_groups": cfg.MODEL.RESNETS.NUM_GROUPS,
        "stride_in_1x1": cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        "zero_init_last_gamma": cfg.MODEL.GN.ZERO_INIT_LAST_GAMMA,
    }


@BACKBONE_REGISTRY.register()
def build_resnet_gn_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """A detectron2 ``ResNet`` (basic-block depths 18, 34; bottleneck depths 50, 101, 152) built from ``cfg``."""
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {tuple(BLOCKS_PER_STAGE)}, got {depth}")
    res5_dilation = cfg.MODEL.RESNETS.RES5_DILATION
    if res5_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {res5_dilation}")
    norm = norm_spec(cfg, "MODEL.RESNETS.NORM")
    block_kwargs = bottleneck_kwargs(cfg, norm)
    basic = depth in BASIC_BLOCK_DEPTHS
    if basic:
        if res5_dilation != 1 or cfg.MODEL.RESNETS.NUM_GROUPS != 1:
            raise ValueError(
                f"MODEL.RESNETS.DEPTH {depth} uses basic blocks, which need RES5_DILATION 1 and NUM_GROUPS 1; "
                f"got {res5_dilation} and {cfg.MODEL.RESNETS.NUM_GROUPS}"
            )
        block_kwargs = {"norm": norm, "zero_init_last_gamma": cfg.MODEL.GN.ZERO_INIT_LAST_GAMMA}

    in_channels = cfg.MODEL.RESNETS.STEM_OUT_CHANNELS
    out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS
    bottleneck_channels = cfg.MODEL.RESNETS.NUM_GROUPS * cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    stem = FusedReLUStem(input_shape.channels, in_channels, norm=norm)
    stages = []
    for index, num_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
        dilation = res5_dilation if index == 3 else 1
        first_stride = 1 if index == 0 or dilation == 2 else 2
        stage_kwargs = {} if basic else {"bottleneck_channels": bottleneck_channels, "dilation": dilation}
        stages.append(
            ResNet.make_stage(
                FusedReLUBasicBlock if basic else FusedReLUBottleneckBlock,
                num_blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                **stage_kwargs,
                **block_kwargs,
            )
        )
        in_channels, out_channels, bottleneck_channels = out_channels, out_channels * 2, bottleneck_channels * 2
    return ResNet(
        stem, stages, out_features=cfg.MODEL.RESNETS.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )
