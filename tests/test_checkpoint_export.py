"""Exporting (gn_detection.checkpoint.export_run, behind tools/export_checkpoint.py) a training run (one iteration on a
one-image dataset): the backbone pickle fine-tunes a model with another number
of classes with no backbone key missing, the slim checkpoint holds only the
model, the torch.export of the feature extractor calls the GN op and
matches eager outputs, and the ONNX files run in ONNX Runtime."""

import onnxruntime
import pytest
import torch
from detectron2.export import TracingAdapter
from checkpoint_helpers import FPN_GN_CONFIG, register_one_image_coco, training_config, training_overrides, unregister
from detectron2.modeling import build_model
from detection_helpers import load_config

from gn_detection.checkpoint import GNCheckpointer, load_pickle, load_torch
from gn_detection.checkpoint.export import FeatureExtractor
from gn_detection.checkpoint.export_run import export_run
from gn_detection.checkpoint.model_keys import check_keys
from gn_detection.checkpoint.onnx_export import detection_adapter
from gn_detection.engine import Trainer, argument_parser
from gn_detection.engine import main as train

DATASET = "gn_detection_checkpoint_export"


@pytest.fixture
def dataset(tmp_path):
    register_one_image_coco(tmp_path, DATASET)
    yield DATASET
    unregister(DATASET)


def test_export_and_fine_tune(dataset, tmp_path):
    run = tmp_path / "run"
    overrides = training_overrides(run, dataset, max_iter=1)
    train(argument_parser().parse_args(["--config-file", str(FPN_GN_CONFIG), *overrides]))
    assert (run / "model_final.pth").exists() and (run / "config.yaml").exists()
    trained = load_torch(run / "model_final.pth")
    assert {"model", "trainer", "iteration"} <= set(trained)  # trainer: optimizer, scheduler, ...

    written = export_run(str(run), check_size=(96, 128))
    assert set(written) == {"backbone.pkl", "model_slim.pth", "config.yaml", "features.pt2", "model_traced.ts",
                            "features.onnx", "model.onnx"}  # fmt: skip
    export = run / "export"

    slim = load_torch(export / "model_slim.pth")
    assert set(slim) == {"model", "__author__"}
    assert all(torch.equal(slim["model"][k], v) for k, v in trained["model"].items())

    backbone = load_pickle(export / "backbone.pkl")
    assert backbone["matching_heuristics"] is False
    assert set(backbone["model"]) == {k for k in trained["model"] if k.startswith("backbone.")}

    # fine-tune: another number of classes, MODEL.WEIGHTS = the exported backbone
    fine_tune = training_config(tmp_path / "fine_tune", dataset, 1, ["MODEL.ROI_HEADS.NUM_CLASSES", "3",
                                "MODEL.WEIGHTS", str(export / "backbone.pkl")])  # fmt: skip
    trainer = Trainer(fine_tune)
    trainer.resume_or_load(resume=False)
    model_state = trainer.model.state_dict()
    check = check_keys(backbone["model"], model_state, required=("backbone.",))
    assert check.ok, check.describe()
    for name, value in backbone["model"].items():
        assert torch.equal(model_state[name], torch.from_numpy(value)), name
    assert model_state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    trainer.train()
    assert trainer.iter == 1

    # the inference export: the GN op is in the graph, outputs match eager ones
    exported = torch.export.load(str(export / "features.pt2"))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "gn_detection.group_norm_forward.default" in targets
    model = build_model(load_config(export / "config.yaml")).eval()
    GNCheckpointer(model).load(str(export / "model_slim.pth"))
    extractor = FeatureExtractor(model)
    images = torch.rand(3, 3, 128, 160, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        eager, ours = extractor(images), exported.module()(images)
    assert len(ours) == len(extractor.feature_names) == 5
    for a, b in zip(eager, ours):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)

    # the whole model, traced: the GN op is in the graph, detections match eager ones
    traced = torch.jit.load(str(export / "model_traced.ts"))
    assert "gn_detection::group_norm_forward" in str(traced.inlined_graph)
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        expected = TracingAdapter(model, [{"image": image}])(image)
        actual = traced(image)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)

    # the whole model in ONNX Runtime: the eager detections (masks as the mask head's probabilities)
    session = onnxruntime.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"image": image.numpy()})
    expected = detection_adapter(model, image)(image)
    assert [o.name for o in session.get_outputs()] == ["pred_boxes", "pred_classes", "pred_masks", "scores",
                                                       "image_size"]  # fmt: skip
    for a, b in zip(actual, expected):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=0, atol=1e-3)
