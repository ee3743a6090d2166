"""The normalization factory: each ``*.NORM`` value builds the layer the paper's
comparison needs, with MODEL.GN's settings, and bad values fail naming the key."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d

from gn_detection import GroupNorm, add_gn_config
from gn_detection.modeling import norm_spec


def config(norm="GN", **gn):
    cfg = add_gn_config(get_cfg())
    cfg.MODEL.FPN.NORM = norm
    for key, value in gn.items():
        setattr(cfg.MODEL.GN, key, value)
    return cfg


def layer(cfg, channels=64, relu=False):
    return norm_spec(cfg, "MODEL.FPN.NORM").layer(channels, relu=relu)


def test_add_gn_config_defaults():
    gn = add_gn_config(get_cfg()).MODEL.GN
    assert (gn.NUM_GROUPS, gn.DIM_PER_GROUP, gn.EPS, gn.IMPL, gn.FUSE_RELU, gn.ZERO_INIT_LAST_GAMMA) == (
        32,
        -1,
        1e-5,
        "custom",
        True,
        False,
    )


@pytest.mark.parametrize(
    "norm, groups",
    [("GN", 32), ("LN", 1), ("IN", 64)],
)
def test_group_norm_family(norm, groups):
    built = layer(config(norm, EPS=1e-3))
    assert type(built) is GroupNorm
    assert (built.num_groups, built.num_channels, built.eps, built.activation) == (groups, 64, 1e-3, None)


def test_dim_per_group():
    built = layer(config(NUM_GROUPS=-1, DIM_PER_GROUP=16), channels=256)
    assert built.num_groups == 16


def test_torch_impl_is_plain_group_norm():
    built = layer(config(IMPL="torch"))
    assert type(built) is torch.nn.GroupNorm and built.num_groups == 32


def test_fused_relu_layer_matches_group_norm_then_relu():
    built = layer(config(), relu=True)
    assert built.activation == "relu"
    x = torch.randn(2, 64, 5, 6, dtype=torch.float64)
    built = built.double()
    with torch.no_grad():
        built.weight.uniform_(-1, 2)
        built.bias.uniform_(-1, 1)
        expected = torch.relu(torch.nn.functional.group_norm(x, 32, built.weight, built.bias, 1e-5))
        torch.testing.assert_close(built(x), expected)


@pytest.mark.parametrize("gn", [{"IMPL": "torch"}, {"FUSE_RELU": False}])
def test_no_fusion_without_custom_op_or_switch(gn):
    spec = norm_spec(config(**gn), "MODEL.FPN.NORM")
    assert not spec.fuses_relu
    with pytest.raises(ValueError, match="MODEL.FPN.NORM"):
        spec.layer(64, relu=True)


def test_detectron2_norms_are_detectron2s():
    assert type(layer(config("FrozenBN"))) is FrozenBatchNorm2d
    assert type(layer(config("BN"))) is torch.nn.BatchNorm2d
    assert layer(config("")) is None
    # detectron2's layers get the plain strings, so e.g. FPN keeps its conv bias without a norm
    assert norm_spec(config(""), "MODEL.FPN.NORM").detectron2_norm == ""


@pytest.mark.parametrize(
    "norm, gn, match",
    [
        ("GroupNorm", {}, "MODEL.FPN.NORM must be one of"),
        ("SyncBN", {}, "MODEL.FPN.NORM must be one of"),
        ("GN", {"DIM_PER_GROUP": 16}, "exactly one of MODEL.GN.NUM_GROUPS and MODEL.GN.DIM_PER_GROUP"),
        ("GN", {"NUM_GROUPS": -1}, "exactly one of MODEL.GN.NUM_GROUPS and MODEL.GN.DIM_PER_GROUP"),
        ("GN", {"IMPL": "cuda"}, "MODEL.GN.IMPL must be one of"),
        ("GN", {"EPS": 0.0}, "MODEL.GN.EPS must be positive"),
    ],
)
def test_bad_values_name_their_key(norm, gn, match):
    with pytest.raises(ValueError, match=match):
        norm_spec(config(norm, **gn), "MODEL.FPN.NORM")


@pytest.mark.parametrize("gn", [{"NUM_GROUPS": 24}, {"NUM_GROUPS": -1, "DIM_PER_GROUP": 48}])
def test_groups_that_do_not_divide_channels(gn):
    with pytest.raises(ValueError, match=r"MODEL\.GN\..* does not split 64 channels.*MODEL\.FPN\.NORM='GN'"):
        layer(config(**gn))


def test_missing_gn_config_says_what_to_call():
    cfg = get_cfg()
    cfg.MODEL.FPN.NORM = "GN"
    with pytest.raises(KeyError, match="add_gn_config"):
        norm_spec(cfg, "MODEL.FPN.NORM")
