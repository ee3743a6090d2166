"""Conversion of Detectron-format pickles built here with the
full blob lists of Detectron's R-50/R-101 GN ImageNet models and of its
R-50-FPN GN Mask R-CNN (random values): every blob must arrive at the right
parameter of the model our configs build, with the right value and layout."""

import pickle

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detection_helpers import CONFIGS, load_config, tiny_config

from gn_detection.checkpoint import GNCheckpointer, load_pickle
from gn_detection.checkpoint.convert import ConversionError, convert_detectron_file

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NUM_CLASSES = 80  # COCO; Detectron's predictors have 81 rows (background first)


class DetectronBlobs:
    """Detectron blobs with random values, each recorded with the torch
    parameter it must end up in and the array expected there."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.blobs = {}
        self.expected = []  # (blob, parameter, expected array)

    def add(self, name, shape, parameter=None, expected=None):
        value = self.rng.standard_normal(shape, dtype=np.float32)
        self.blobs[name] = value
        self.blobs[name + "_momentum"] = np.zeros(1, np.float32)  # Detectron saves SGD momentum (here shrunk)
        if parameter is not None:
            self.expected.append((name, parameter, value if expected is None else expected(value)))

    def conv(self, name, shape, module, bias=False):
        self.add(name + "_w", shape, module.weight)
        self.add(name + "_b", shape[:1], module.bias) if bias else None

    def conv_gn(self, name, shape, module):
        self.conv(name, shape, module)
        self.add(name + "_gn_s", shape[:1], module.norm.weight)
        self.add(name + "_gn_b", shape[:1], module.norm.bias)

    def resnet(self, depth, stem_and_stages, res5_owner):
        """conv1 and res2..res5 as Detectron's ResNet names them; ``res5_owner``
        holds res5 (the backbone, or the RoI heads of C4 models)."""
        self.conv_gn("conv1", (64, 3, 7, 7), stem_and_stages.stem.conv1)
        dim_in = 64
        for stage, count in zip(range(2, 6), BLOCKS[depth]):
            out, bottleneck = 256 * 2 ** (stage - 2), 64 * 2 ** (stage - 2)
            blocks = getattr(res5_owner if stage == 5 else stem_and_stages, f"res{stage}")
            for i in range(count):
                prefix, block = f"res{stage}_{i}", blocks[i]
                if i == 0:
                    self.conv_gn(prefix + "_branch1", (out, dim_in, 1, 1), block.shortcut)
                self.conv_gn(prefix + "_branch2a", (bottleneck, dim_in if i == 0 else out, 1, 1), block.conv1)
                self.conv_gn(prefix + "_branch2b", (bottleneck, bottleneck, 3, 3), block.conv2)
                self.conv_gn(prefix + "_branch2c", (out, bottleneck, 1, 1), block.conv3)
            dim_in = out


def imagenet_pickle(path, depth, body, res5_owner, protocol=4):
    blobs = DetectronBlobs()
    blobs.resnet(depth, body, res5_owner)
    blobs.add("pred_w", (1000, 2048))
    blobs.add("pred_b", (1000,))
    path.write_bytes(pickle.dumps({"blobs": blobs.blobs}, protocol=protocol))
    return blobs


def mask_rcnn_fpn_pickle(path, model):
    """Detectron's GN Mask R-CNN R-50-FPN (4conv1fc box head, 4-conv mask head)."""
    blobs = DetectronBlobs(seed=1)
    backbone, heads = model.backbone, model.roi_heads
    blobs.resnet(50, backbone.bottom_up, backbone.bottom_up)
    for stage, last, dim in ((2, 2, 256), (3, 3, 512), (4, 5, 1024), (5, 2, 2048)):
        lateral = f"fpn_inner_res{stage}_{last}_sum" + ("" if stage == 5 else "_lateral")
        blobs.conv_gn(lateral, (256, dim, 1, 1), getattr(backbone, f"fpn_lateral{stage}"))
        blobs.conv_gn(f"fpn_res{stage}_{last}_sum", (256, 256, 3, 3), getattr(backbone, f"fpn_output{stage}"))
    rpn = model.proposal_generator.rpn_head
    blobs.conv("conv_rpn_fpn2", (256, 256, 3, 3), rpn.conv, bias=True)
    blobs.conv("rpn_cls_logits_fpn2", (3, 256, 1, 1), rpn.objectness_logits, bias=True)
    blobs.conv("rpn_bbox_pred_fpn2", (12, 256, 1, 1), rpn.anchor_deltas, bias=True)
    for k in range(1, 5):
        blobs.conv_gn(f"head_conv{k}", (256, 256, 3, 3), getattr(heads.box_head, f"conv{k}"))
        blobs.conv_gn(f"_mask_fcn{k}", (256, 256, 3, 3), getattr(heads.mask_head, f"mask_fcn{k}"))
    blobs.conv("fc6", (1024, 256 * 7 * 7), heads.box_head.fc1, bias=True)
    background_last = lambda v: np.concatenate([v[1:], v[:1]])  # noqa: E731
    predictor = heads.box_predictor
    for param in ("weight", "bias"):
        c2 = {"weight": "w", "bias": "b"}[param]
        shape = (1024,) if param == "weight" else ()
        blobs.add(f"cls_score_{c2}", (81, *shape), getattr(predictor.cls_score, param), background_last)
        blobs.add(f"bbox_pred_{c2}", (4 * 81, *shape), getattr(predictor.bbox_pred, param), lambda v: v[4:])
        shape = (256, 1, 1) if param == "weight" else ()
        blobs.add(f"mask_fcn_logits_{c2}", (81, *shape), getattr(heads.mask_head.predictor, param), lambda v: v[1:])
    blobs.conv("conv5_mask", (256, 256, 2, 2), heads.mask_head.deconv, bias=True)
    path.write_bytes(pickle.dumps({"blobs": blobs.blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}, protocol=4))
    return blobs


def convert_and_load(tmp_path, config, source, model):
    """Converts ``source`` for ``config`` and loads the result into ``model``
    (built from ``config`` with MODEL.WEIGHTS unset)."""
    output = tmp_path / "converted.pkl"
    convert_detectron_file(str(source), str(output), cfg=load_config(CONFIGS / config))
    converted = load_pickle(output)
    assert converted["matching_heuristics"] is False and "__author__" in converted
    GNCheckpointer(model).load(str(output))
    return converted["model"]


def assert_arrived(blobs, model, state):
    """Every recorded blob is in its model parameter, exactly (same shape and values)."""
    names = {id(param): name for name, param in model.named_parameters()}
    for blob, parameter, expected in blobs.expected:
        assert tuple(parameter.shape) == expected.shape, blob
        assert torch.equal(parameter.detach(), torch.from_numpy(expected)), blob
        assert names[id(parameter)] in state, blob


@pytest.mark.parametrize(
    "config, depth",
    [
        ("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml", 50),
        ("table4_c4/mask_rcnn_R_50_C4_gn.yaml", 50),
        ("table6_fpn/mask_rcnn_R_101_FPN_gn_2x.yaml", 101),
    ],
)
def test_imagenet_gn_model(tmp_path, config, depth):
    model = build_model(tiny_config(config))
    c4 = "C4" in config
    source = tmp_path / f"R-{depth}-GN.pkl"
    protocol = 2 if depth == 50 and not c4 else 4  # 2: as Python 2 wrote Detectron's files
    blobs = imagenet_pickle(source, depth, model.backbone if c4 else model.backbone.bottom_up,
                            model.roi_heads if c4 else model.backbone.bottom_up, protocol)  # fmt: skip
    state = convert_and_load(tmp_path, config, source, model)
    resnet = ("backbone.", "roi_heads.res5.") if c4 else ("backbone.bottom_up.",)
    model_state = model.state_dict()
    assert set(state) == {k for k in model_state if k.startswith(resnet) and not k.startswith("backbone.fpn")}
    assert len(state) == len(blobs.expected)  # pred_w/pred_b dropped, momentum ignored
    assert_arrived(blobs, model, state)
    if not c4:
        assert "backbone.bottom_up.res4.5.conv2.norm.weight" in state
        np.testing.assert_array_equal(state["backbone.bottom_up.stem.conv1.weight"], blobs.blobs["conv1_w"])
    else:
        np.testing.assert_array_equal(state["roi_heads.res5.2.conv3.weight"], blobs.blobs["res5_2_branch2c_w"])


def test_mask_rcnn_fpn_gn_model(tmp_path):
    config = "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"
    source = tmp_path / "mask_rcnn_R-50-FPN_2x_gn.pkl"
    model = build_model(tiny_config(config))
    blobs = mask_rcnn_fpn_pickle(source, model)
    state = convert_and_load(tmp_path, config, source, model)
    assert set(state) == set(model.state_dict())  # zero missing, zero unexpected
    assert len(state) == len(blobs.expected)
    assert_arrived(blobs, model, state)

    heads, raw = model.roi_heads, blobs.blobs
    # class c (0-based in detectron2) is Detectron's class c + 1; background moves last
    cls_score = heads.box_predictor.cls_score.weight.detach().numpy()
    assert cls_score.shape == (NUM_CLASSES + 1, 1024)
    np.testing.assert_array_equal(cls_score[0], raw["cls_score_w"][1])
    np.testing.assert_array_equal(cls_score[NUM_CLASSES], raw["cls_score_w"][0])
    bbox = heads.box_predictor.bbox_pred.bias.detach().numpy()
    assert bbox.shape == (4 * NUM_CLASSES,)
    np.testing.assert_array_equal(bbox[:4], raw["bbox_pred_b"][4:8])
    masks = heads.mask_head.predictor.weight.detach().numpy()
    assert masks.shape == (NUM_CLASSES, 256, 1, 1)
    np.testing.assert_array_equal(masks[0], raw["mask_fcn_logits_w"][1])
    np.testing.assert_array_equal(
        model.backbone.fpn_lateral5.norm.bias.detach().numpy(), raw["fpn_inner_res5_2_sum_gn_b"]
    )
    np.testing.assert_array_equal(
        model.backbone.fpn_lateral2.weight.detach().numpy(), raw["fpn_inner_res2_2_sum_lateral_w"]
    )


def test_unmapped_blob_fails_unless_ignored(tmp_path):
    config = "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"
    reference = build_model(tiny_config(config))
    source = tmp_path / "R-50-GN.pkl"
    blobs = imagenet_pickle(source, 50, reference.backbone.bottom_up, reference.backbone.bottom_up)
    data = {"blobs": dict(blobs.blobs, res2_0_branch2a_bn_s=np.ones(64, np.float32), lr=np.float32(0.1))}
    source.write_bytes(pickle.dumps(data))
    output = tmp_path / "out.pkl"
    with pytest.raises(ConversionError) as error:
        convert_detectron_file(str(source), str(output))
    assert "res2_0_branch2a_bn_s" in str(error.value) and str(source) in str(error.value) and not output.exists()
    conversion = convert_detectron_file(str(source), str(output), ignore_unmapped=True)
    assert conversion.unmapped == ["res2_0_branch2a_bn_s"]
    assert "backbone.bottom_up.res2.0.conv1.norm.weight" in load_pickle(output)["model"]


def test_wrong_depth_is_reported_against_config(tmp_path):
    """R-50 weights checked against an R-101 config: missing res4 blocks are named."""
    reference = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"))
    source = tmp_path / "R-50-GN.pkl"
    imagenet_pickle(source, 50, reference.backbone.bottom_up, reference.backbone.bottom_up)
    config = load_config(CONFIGS / "table6_fpn/mask_rcnn_R_101_FPN_gn_2x.yaml")
    with pytest.raises(ConversionError) as error:
        convert_detectron_file(str(source), str(tmp_path / "out.pkl"), cfg=config)
    message = str(error.value)
    assert "153 missing keys: backbone.bottom_up.res4.6.conv1.weight" in message and str(source) in message
