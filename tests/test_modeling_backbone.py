"""Structure of the models built from our configs: parameter names like
detectron2's own models, our GN layers where GN is asked for (counted against
detectron2's own GN model), the zero-init switch, freezing, weight decay."""

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, build_resnet_backbone
from detectron2.solver import build_optimizer
from detection_helpers import count_modules, shrink_for_cpu, tiny_config

from gn_detection import GroupNorm
from gn_detection.modeling import build_resnet_gn_backbone

FPN_GN = "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"
C4_GN = "table4_c4/mask_rcnn_R_50_C4_gn.yaml"


@pytest.fixture(scope="module")
def detectron2_gn_model():
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"))
    return build_model(shrink_for_cpu(cfg))


def build(name, opts=()):
    return build_model(tiny_config(name, opts))


def test_parameter_names_follow_detectron2(detectron2_gn_model):
    ours = build(FPN_GN)
    theirs = {name: tuple(t.shape) for name, t in detectron2_gn_model.state_dict().items()}
    assert {name: tuple(t.shape) for name, t in ours.state_dict().items()} == theirs
    for name in [
        "backbone.bottom_up.stem.conv1.norm.weight",
        "backbone.bottom_up.res2.0.conv1.norm.weight",
        "backbone.fpn_lateral2.norm.weight",
        "roi_heads.box_head.conv1.norm.weight",
        "roi_heads.mask_head.mask_fcn1.norm.weight",
    ]:
        assert name in theirs


def test_every_group_norm_is_ours(detectron2_gn_model):
    ours = build(FPN_GN)
    reference_count = count_modules(detectron2_gn_model, torch.nn.GroupNorm)
    assert count_modules(ours, GroupNorm) == reference_count == 69
    # every norm followed by a ReLU in detectron2's model: the stem, conv1 and conv2 of
    # each bottleneck block, and the head convs that carry a ReLU activation
    blocks = count_modules(detectron2_gn_model, BottleneckBlock)
    head_convs = sum(
        getattr(m, "activation", None).__class__ is torch.nn.ReLU for m in detectron2_gn_model.roi_heads.modules()
    )
    fused = sum(m.activation == "relu" for m in ours.modules() if isinstance(m, GroupNorm))
    assert fused == 1 + 2 * blocks + head_convs == 41


def test_switches_turn_fusion_and_custom_op_off():
    unfused = build(FPN_GN, ["MODEL.GN.FUSE_RELU", "False"])
    assert count_modules(unfused, GroupNorm) == 69
    assert not any(m.activation for m in unfused.modules() if isinstance(m, GroupNorm))
    plain = build(FPN_GN, ["MODEL.GN.IMPL", "torch"])
    assert count_modules(plain, GroupNorm) == 0 and count_modules(plain, torch.nn.GroupNorm) == 69


def test_c4_res5_head_uses_gn_like_the_backbone():
    model = build(C4_GN)
    res5_norms = [m for m in model.roi_heads.res5.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(res5_norms) == 3 * 3 + 1 and all(type(m) is GroupNorm for m in res5_norms)
    assert count_modules(model.backbone, GroupNorm) == 1 + 3 * (3 + 4 + 6) + 3


def test_frozen_bn_config_has_no_group_norm():
    model = build("table6_fpn/mask_rcnn_R_50_FPN_bn_frozen_2x.yaml")
    assert count_modules(model, torch.nn.GroupNorm) == 0
    assert count_modules(model.backbone.bottom_up, FrozenBatchNorm2d) == 53


def test_zero_init_switch_zeroes_exactly_the_last_norm_of_each_block():
    model = build(C4_GN, ["MODEL.GN.ZERO_INIT_LAST_GAMMA", "True"])
    blocks = [m for m in model.modules() if isinstance(m, BottleneckBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    last_norms = {id(block.conv3.norm) for block in blocks}
    for module in model.modules():
        if isinstance(module, GroupNorm):
            expected = 0.0 if id(module) in last_norms else 1.0
            assert torch.all(module.weight == expected)
            assert torch.all(module.bias == 0.0)


def test_zero_init_switch_needs_a_trainable_norm():
    with pytest.raises(ValueError, match="ZERO_INIT_LAST_GAMMA.*MODEL.RESNETS.NORM is 'FrozenBN'"):
        build("table6_fpn/mask_rcnn_R_50_FPN_bn_frozen_2x.yaml", ["MODEL.GN.ZERO_INIT_LAST_GAMMA", "True"])


def test_freeze_at_zero_leaves_nothing_frozen():
    model = build("table7_scratch/scratch_mask_rcnn_R_50_FPN_gn_3x.yaml")
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_at_two_freezes_stem_and_res2_only():
    model = build(FPN_GN)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("backbone.bottom_up.stem.", "backbone.bottom_up.res2.")) for name in frozen)
    assert all(not p.requires_grad for p in model.backbone.bottom_up.res2.parameters())


def test_optimizer_puts_gn_gamma_and_beta_in_a_zero_weight_decay_group():
    cfg = tiny_config(FPN_GN, ["MODEL.BACKBONE.FREEZE_AT", "0"])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    norm_params = [p for m in model.modules() if isinstance(m, GroupNorm) for p in m.parameters()]
    assert len(norm_params) == 2 * 69
    assert all(decay_of[id(p)] == 0.0 for p in norm_params)
    conv_weight = model.backbone.bottom_up.res3[0].conv2.weight
    assert decay_of[id(conv_weight)] == cfg.SOLVER.WEIGHT_DECAY == 1e-4


@pytest.mark.parametrize(
    "opts, match",
    [
        (["MODEL.RESNETS.DEPTH", "26"], "MODEL.RESNETS.DEPTH must be one of"),
        (["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NUM_GROUPS", "32"], "basic blocks, which need"),
        (["MODEL.RESNETS.NORM", "group"], "MODEL.RESNETS.NORM must be one of"),
        (["MODEL.ROI_BOX_HEAD.NORM", "gn"], "MODEL.ROI_BOX_HEAD.NORM must be one of"),
        (["MODEL.ROI_MASK_HEAD.NORM", "GN32"], "MODEL.ROI_MASK_HEAD.NORM must be one of"),
        (["MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, False, True, True]"], "DEFORM_ON_PER_STAGE"),
        (["MODEL.GN.NUM_GROUPS", "48"], "MODEL.GN.NUM_GROUPS=48 does not split 64 channels"),
    ],
)
def test_bad_config_values_fail_naming_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        build(FPN_GN, opts)


@pytest.mark.parametrize("depth, blocks", [(18, 8), (34, 16)])
def test_basic_block_resnet_matches_detectron2s(depth, blocks):
    """R-18/34 (basic blocks): same names and shapes as detectron2's own GN ResNet,
    the ReLU after conv1 fused, and the same features from the same weights."""
    opts = ["MODEL.RESNETS.DEPTH", str(depth), "MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']"]
    cfg = tiny_config(FPN_GN, opts)
    ours = build_resnet_gn_backbone(cfg, ShapeSpec(channels=3)).eval()
    theirs = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert count_modules(ours, BasicBlock) == blocks
    assert sum(m.activation == "relu" for m in ours.modules() if isinstance(m, GroupNorm)) == 1 + blocks
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.uniform_(-0.2, 0.2)  # gamma and beta away from 1 and 0
    ours.load_state_dict(theirs.state_dict())
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, actual = theirs(image), ours(image)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4)


def test_basic_block_zero_init_and_narrow_width():
    opts = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.RES2_OUT_CHANNELS", "32",
            "MODEL.RESNETS.STEM_OUT_CHANNELS", "32", "MODEL.GN.NUM_GROUPS", "8", "MODEL.GN.ZERO_INIT_LAST_GAMMA", "True"]
    backbone = build_resnet_gn_backbone(tiny_config(FPN_GN, opts), ShapeSpec(channels=3))
    blocks = [m for m in backbone.modules() if isinstance(m, BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [32, 32, 64, 64, 128, 128, 256, 256]
    last_norms = {id(block.conv2.norm) for block in blocks}
    for module in backbone.modules():
        if isinstance(module, GroupNorm):
            assert torch.all(module.weight == (0.0 if id(module) in last_norms else 1.0))
