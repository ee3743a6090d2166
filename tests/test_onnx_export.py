"""ONNX export (gn_detection.checkpoint.onnx_export, checked by onnx_check, written by
export_run): every GroupNorm layer -- gn_detection's, ``nn.GroupNorm``, the LN and IN
configs -- becomes one GroupNormalization node of opset 21, a fused ReLU one Relu right
after it; ONNX Runtime reproduces the eager models (the demo's model and detectron2's
own GN model whole, a full-width R50-FPN's features), also for an image without
detections; the checks fail on a decomposition or a mismatch, and then nothing is written."""

import warnings

import numpy as np
import onnx
import onnx.defs
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from checkpoint_helpers import FPN_GN_CONFIG, training_overrides
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detection_helpers import CONFIGS, count_modules, load_config, shrink_for_cpu
from torch import nn

from gn_detection import GroupNorm
from gn_detection.checkpoint import export_run
from gn_detection.checkpoint.export import ExportError, FeatureExtractor
from gn_detection.checkpoint.export_run import build_loaded_model, write_features_onnx, write_model_onnx
from gn_detection.checkpoint.onnx_check import (
    GroupNormCalls,
    as_arrays,
    check_graph,
    compare_outputs,
    counting_group_norm_calls,
    pair_detections,
    summarize,
)
from gn_detection.checkpoint.onnx_export import OPSET, detection_adapter, export_module_onnx, roi_batches_never_empty

DEMO_CONFIG = CONFIGS / "demo" / "mask_rcnn_R_18_FPN_gn_scratch_shapes.yaml"
TOLERANCE = 1e-3


def random_state(cfg, seed=0):
    """Weights of ``cfg``'s model with GN gamma/beta away from (1, 0) and spread
    class scores (so that detections are not near-ties)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05, generator=generator)
    return model.state_dict()


def group_normalization_nodes(path):
    return [node for node in onnx.load(str(path)).graph.node if node.op_type == "GroupNormalization"]


def run_model_onnx(path, image):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image.numpy()})))


def assert_same_detections(path, model, image):
    """model.onnx in ONNX Runtime against the eager model on an image it was not traced on."""
    adapter = detection_adapter(model, image)
    outputs = adapter(image)
    eager = as_arrays(list(run_model_onnx(path, image)), outputs)
    ours = pair_detections(str(path), run_model_onnx(path, image), eager, TOLERANCE)
    assert compare_outputs(str(path), ours, eager, TOLERANCE) <= TOLERANCE
    return eager


def test_each_group_norm_layer_is_one_operator():
    layers = [GroupNorm(4, 16, activation="relu"), nn.GroupNorm(16, 16), GroupNorm(1, 16),
              nn.GroupNorm(2, 16, affine=False), GroupNorm(8, 16, affine=False)]  # fmt: skip
    model = nn.Sequential(nn.Conv2d(3, 16, 3), *layers).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in layers:
            if layer.affine:
                layer.weight.copy_(1 + torch.randn(16, generator=generator))
                layer.bias.copy_(torch.randn(16, generator=generator))
    example = torch.rand(1, 3, 8, 8)
    with counting_group_norm_calls(model) as calls:
        model(example)
    assert (calls.total, calls.fused_relu) == (5, 1)
    data = export_module_onnx(model, (example,), ["x"], ["y"], {"x": {0: "n", 2: "h", 3: "w"}})
    summary = check_graph(data, "layers.onnx", calls)
    assert summary.opset == OPSET == 21
    assert summary.group_norm_nodes == 5 and summary.group_norm_then_relu == 1
    assert summary.op_counts["Relu"] == 1 and "InstanceNormalization" not in summary.op_counts
    nodes = [n for n in onnx.load_from_string(data).graph.node if n.op_type == "GroupNormalization"]
    assert [onnx.helper.get_attribute_value(n.attribute[1]) for n in nodes] == [4, 16, 1, 2, 8]

    # another batch and size than traced, against PyTorch's own group_norm in float64
    x = torch.randn(2, 3, 13, 9, generator=generator) * 3 + 5
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"x": x.numpy()})
    conv = model[0]
    expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double())
    for layer in layers:
        weight, bias = (layer.weight.double(), layer.bias.double()) if layer.affine else (None, None)
        expected = F.group_norm(expected, layer.num_groups, weight, bias, layer.eps)
        if getattr(layer, "activation", None) == "relu":
            expected = expected.relu()
    np.testing.assert_allclose(actual, expected.detach().numpy(), rtol=0, atol=1e-4)


def test_the_op_statistics_outputs_are_not_exported():
    class UsesStatistics(nn.Module):
        def forward(self, x):
            output, mean, _ = torch.ops.gn_detection.group_norm_forward(x, None, None, 2, 1e-5, False)
            return output + mean.sum()

    with pytest.raises(torch.onnx.errors.SymbolicValueError, match="mean and rstd outputs are used"):
        export_module_onnx(UsesStatistics(), (torch.rand(1, 4, 3, 3),), ["x"], ["y"], None)


def test_the_check_rejects_a_decomposition(tmp_path):
    """The exporter's own GroupNorm translation (used below opset 21) is a decomposition."""
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8)).eval()
    path = tmp_path / "decomposed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(model, (torch.rand(1, 3, 4, 4),), str(path), dynamo=False, opset_version=20)
    with pytest.raises(ExportError, match="0 GroupNormalization nodes for 1 GroupNorm layer calls, and a "
                       "decomposition is left: {'InstanceNormalization': 1}"):  # fmt: skip
        check_graph(path.read_bytes(), "decomposed.onnx", GroupNormCalls(total=1))


def test_detections_pair_up_across_swapped_near_ties():
    eager = {"pred_boxes": np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 4, 4]], np.float32),
             "pred_classes": np.array([1, 2, 1]), "scores": np.array([0.5, 0.5, 0.4], np.float32),
             "image_size": np.array([32, 32])}  # fmt: skip
    swapped = {name: (value[[1, 0, 2]] if name != "image_size" else value) for name, value in eager.items()}
    swapped["scores"] = swapped["scores"] + np.float32(1e-7)
    paired = pair_detections("m.onnx", swapped, eager, 1e-3)
    assert 0 < compare_outputs("m.onnx", paired, eager, 1e-3) < 1e-6
    fewer = {name: (value[:2] if name != "image_size" else value) for name, value in eager.items()}
    with pytest.raises(ExportError, match="ONNX Runtime finds 2 detections, the eager model 3"):
        pair_detections("m.onnx", fewer, eager, 1e-3)
    relabeled = dict(eager, pred_classes=np.array([1, 2, 2]))
    with pytest.raises(ExportError, match=r"detection of class 1 at box \[1.0, 1.0, 4.0, 4.0\] has no ONNX Runtime"):
        pair_detections("m.onnx", relabeled, eager, 1e-3)
    with pytest.raises(ExportError, match=r"output scores differs from the eager model's by 0.1 \(tolerance 0.001\)"):
        compare_outputs("m.onnx", dict(eager, scores=eager["scores"] + np.float32(0.1)), eager, 1e-3)
    with pytest.raises(ExportError, match=r"output image_size differs .* by 1 \(tolerance 0\)"):
        compare_outputs("m.onnx", dict(eager, image_size=np.array([32, 33])), eager, 1e-3)


@pytest.fixture(scope="module")
def demo_model():
    cfg = load_config(DEMO_CONFIG, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10"])
    return cfg, random_state(cfg)


@pytest.fixture(scope="module")
def demo_export(demo_model, tmp_path_factory):
    """model.onnx of the demo's model (random weights), and the checked difference."""
    cfg, state = demo_model
    path = tmp_path_factory.mktemp("demo_export") / "model.onnx"
    return path, write_model_onnx(cfg, state, str(path), (128, 128), TOLERANCE)[0]


def test_demo_model_exports_whole(demo_model, demo_export):
    cfg, state = demo_model
    path, difference = demo_export
    assert difference <= TOLERANCE
    model = build_loaded_model(cfg, state)
    # ResNet-18: stem, 16 block convs, 3 shortcuts; FPN 8; box head 4; mask head 4.
    assert len(group_normalization_nodes(path)) == count_modules(model, nn.GroupNorm) == 36
    # fused: stem, the first conv of the 8 blocks, the 8 head convs
    fused = sum(isinstance(m, GroupNorm) and m.activation == "relu" for m in model.modules())
    assert summarize(onnx.load(str(path))).group_norm_then_relu == fused == 17
    assert {o.name for o in onnx.load(str(path)).graph.output} == {
        "pred_boxes", "pred_classes", "pred_masks", "scores", "image_size"}  # fmt: skip
    image = torch.rand(3, 112, 144, generator=torch.Generator().manual_seed(3)) * 255
    eager = assert_same_detections(path, model, image)
    assert eager["pred_boxes"].shape == (10, 4) and eager["pred_masks"].shape == (10, 1, 28, 28)


def test_images_without_detections_run_and_a_trace_without_them_generalizes(tmp_path):
    """With a score threshold of 0.4 this random model finds nothing on the random
    image it is traced on and on another, and 4 detections on a black image. An
    image without detections leaves the RoI heads an empty batch, which
    GroupNormalization cannot normalize: the export runs the heads on one extra RoI."""
    cfg = load_config(DEMO_CONFIG, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.4"])
    path = tmp_path / "model.onnx"
    state = random_state(cfg)
    write_model_onnx(cfg, state, str(path), (96, 96), TOLERANCE)
    model = build_loaded_model(cfg, state)
    traced_image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(0)) * 255  # write_model_onnx's
    assert detection_adapter(model, traced_image)(traced_image)[0].shape == (0, 4)
    empty = assert_same_detections(path, model, torch.rand(3, 128, 96, generator=torch.Generator().manual_seed(2)) * 255)
    assert empty["pred_boxes"].shape == (0, 4) and empty["pred_masks"].shape == (0, 1, 28, 28)
    assert empty["image_size"].tolist() == [128, 96]
    assert len(assert_same_detections(path, model, torch.zeros(3, 96, 96))["scores"]) == 4

    heads = model.roi_heads
    with roi_batches_never_empty(model):
        assert "forward" in vars(heads.box_head) and "layers" in vars(heads.mask_head)
        assert heads.mask_head.layers(torch.rand(0, 64, 14, 14)).shape == (0, 4, 28, 28)
    assert "forward" not in vars(heads.box_head) and "layers" not in vars(heads.mask_head)


def test_c4_model_exports_whole_also_without_detections(tmp_path):
    """C4 models: res5 is the RoI head of boxes and masks, run on one extra RoI in the export."""
    c4_config = CONFIGS / "table4_c4" / "mask_rcnn_R_50_C4_gn.yaml"
    cfg = shrink_for_cpu(load_config(c4_config, training_overrides(tmp_path, "unused", 1)))
    state = random_state(cfg)
    path = tmp_path / "model.onnx"
    write_model_onnx(cfg, state, str(path), (96, 128), TOLERANCE)
    model = build_loaded_model(cfg, state)
    # res2-res4: stem, 13 blocks x 3 convs, 3 shortcuts; the res5 head (3 blocks x 3, 1 shortcut)
    # runs for the boxes and again for the masks: two nodes per layer
    assert count_modules(model, nn.GroupNorm) == 53
    assert len(group_normalization_nodes(path)) == 43 + 2 * 10
    image = torch.rand(3, 112, 100, generator=torch.Generator().manual_seed(7)) * 255
    assert len(assert_same_detections(path, model, image)["scores"]) == 5

    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.0
    write_model_onnx(cfg, state, str(path), (96, 128), TOLERANCE)
    # masks: 7x7 pooled RoIs (shrink_for_cpu), res5's stride 2, the 2x deconv
    assert run_model_onnx(path, image)["pred_masks"].shape == (0, 1, 8, 8)


def test_features_of_a_full_width_r50_fpn(tmp_path):
    cfg = shrink_for_cpu(load_config(FPN_GN_CONFIG))
    state = random_state(cfg)
    path = tmp_path / "features.onnx"
    difference, summary = write_features_onnx(cfg, state, str(path), (96, 128), TOLERANCE)
    assert difference <= TOLERANCE and summary.group_norm_nodes == 61
    extractor = FeatureExtractor(build_loaded_model(cfg, state))
    assert len(group_normalization_nodes(path)) == count_modules(extractor, nn.GroupNorm) == 61
    images = torch.rand(3, 3, 128, 96, generator=torch.Generator().manual_seed(5)) * 255
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        eager = extractor(images)
    for actual, expected in zip(session.run(None, {"images": images.numpy()}), eager):
        np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=TOLERANCE)


def test_ln_and_in_configs_export_to_the_same_operator(tmp_path):
    norms = ["MODEL.RESNETS.NORM", "LN", "MODEL.FPN.NORM", "IN", "MODEL.ROI_BOX_HEAD.NORM", "LN",
             "MODEL.ROI_MASK_HEAD.NORM", "IN"]  # fmt: skip
    cfg = shrink_for_cpu(load_config(FPN_GN_CONFIG, [*training_overrides(tmp_path, "unused", 1), *norms]))
    state = random_state(cfg)
    path = tmp_path / "model.onnx"
    write_model_onnx(cfg, state, str(path), (96, 128), TOLERANCE)
    model = build_loaded_model(cfg, state)
    layers = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    nodes = group_normalization_nodes(path)
    groups = sorted(onnx.helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "num_groups")
    assert groups == sorted(m.num_groups for m in layers)
    assert 1 in groups and any(m.num_groups == m.num_channels > 1 for m in layers)
    assert_same_detections(path, model, torch.rand(3, 100, 140, generator=torch.Generator().manual_seed(4)) * 255)


def test_detectron2_own_gn_model_exports_the_same_way(tmp_path):
    """detectron2's Misc/mask_rcnn_R_50_FPN_3x_gn: nn.GroupNorm (32 groups) and separate ReLUs, narrowed."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"))
    cfg.merge_from_list(["MODEL.RESNETS.WIDTH_PER_GROUP", "32", "MODEL.RESNETS.RES2_OUT_CHANNELS", "128",
                         "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
                         "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64"])  # fmt: skip
    cfg = shrink_for_cpu(cfg)
    state = random_state(cfg)
    path = tmp_path / "model.onnx"
    write_model_onnx(cfg, state, str(path), (96, 128), TOLERANCE)
    model = build_loaded_model(cfg, state)
    assert not any(isinstance(m, GroupNorm) for m in model.modules())
    assert len(group_normalization_nodes(path)) == count_modules(model, nn.GroupNorm) == 69
    # the separate ReLUs after the norms are one Relu node each, where ours are fused
    assert summarize(onnx.load(str(path))).group_norm_then_relu == 41
    assert_same_detections(path, model, torch.rand(3, 120, 100, generator=torch.Generator().manual_seed(6)) * 255)


def test_a_mismatch_names_the_output_and_writes_nothing(demo_model, tmp_path, monkeypatch):
    cfg, state = demo_model
    run_session = export_run.run_session

    def off_by_half(session, inputs):
        outputs = run_session(session, inputs)
        outputs["p3"] = outputs["p3"] + 0.5
        return outputs

    monkeypatch.setattr(export_run, "run_session", off_by_half)
    path = tmp_path / "features.onnx"
    with pytest.raises(ExportError, match=r"features.onnx: output p3 differs from the eager model's by 0.5 "):
        write_features_onnx(cfg, state, str(path), (96, 96), TOLERANCE)
    assert not path.exists()


def test_ops_of_opset_21_keep_their_opset_20_meaning(demo_export):
    """The TorchScript exporter's translations go up to opset 20 (see onnx_export):
    every op in the exported model whose definition changed at opset 21, other than
    GroupNormalization, kept its inputs, outputs and attributes and only gained types."""
    path, _ = demo_export
    changed = []
    for op in sorted({node.op_type for node in onnx.load(str(path)).graph.node} - {"GroupNormalization"}):
        new, old = onnx.defs.get_schema(op, 21), onnx.defs.get_schema(op, 20)
        if new.since_version != 21:
            continue
        changed.append(op)
        assert [i.name for i in new.inputs] == [i.name for i in old.inputs], op
        assert [o.name for o in new.outputs] == [o.name for o in old.outputs], op
        assert {k: (a.type, a.default_value.SerializeToString()) for k, a in new.attributes.items()} == {
            k: (a.type, a.default_value.SerializeToString()) for k, a in old.attributes.items()}, op  # fmt: skip
        old_types = {c.type_param_str: set(c.allowed_type_strs) for c in old.type_constraints}
        for constraint in new.type_constraints:
            assert old_types[constraint.type_param_str] <= set(constraint.allowed_type_strs), op
    assert {"Cast", "Constant", "Reshape", "Shape"} <= set(changed)
