"""The demo (tools/demo.py), shortened (tiny images, a few iterations): it trains, evaluates
and writes its curves, pictures, checkpoint and export; it never overwrites a
previous run unless told to; and the comparison mode trains its four runs."""

import json
import os

import cv2
import pytest
import torch
import yaml

from detection_helpers import count_modules, load_config
from detectron2.modeling import build_model

from gn_detection import GroupNorm
from gn_detection.checkpoint.safe_load import load_pickle
from gn_detection.data import ShapesSpec, ensure_shapes_dataset
from gn_detection.demo import comparison_table, final_metrics, read_metrics

from gn_detection.demo import run as demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = ShapesSpec(num_train=6, num_val=3, image_size=64)
SHORT = ["--num-train", "6", "--num-val", "3", "--image-size", "64", "--num-pictures", "2",
         "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(3,)"]  # fmt: skip


def run(tmp_path, *flags):
    return demo.main(["--datasets-root", str(tmp_path / "datasets"), *flags, *SHORT])


@pytest.mark.slow
def test_shortened_demo_writes_everything(tmp_path):
    output = tmp_path / "demo"
    assert run(tmp_path, "--output-dir", str(output)) == 0
    records = read_metrics(str(output / "metrics.json"))
    evaluations = [r for r in records if "segm/AP50" in r]
    assert len(evaluations) == 2  # after iteration 2 and at the end
    summary = json.loads((output / "summary.json").read_text())
    assert summary["final"] == final_metrics(records) and summary["final"]["iteration"] == 4
    curves = cv2.imread(str(output / "training_curves.png"))
    assert curves is not None and curves.shape[1] == 1200
    pictures = sorted(os.listdir(output / "predictions"))
    assert pictures == ["val_000001.png", "val_000002.png"]
    picture = cv2.imread(str(output / "predictions" / pictures[0]))
    assert picture.shape[1] == 2 * 3 * 64  # ground truth and prediction, each drawn 3x
    assert (output / "model_final.pth").is_file()
    backbone = load_pickle(str(output / "export" / "backbone.pkl"))["model"]
    assert backbone and all(name.startswith("backbone.") for name in backbone)
    assert "backbone.bottom_up.stem.conv1.norm.weight" in backbone
    assert {"features.pt2", "model_traced.ts", "model_slim.pth"} <= set(os.listdir(output / "export"))


def test_an_existing_run_is_never_overwritten_without_the_flag(tmp_path, capsys):
    output = tmp_path / "demo"
    output.mkdir()
    (output / "metrics.json").write_text("previous run\n")
    assert run(tmp_path, "--output-dir", str(output)) == 2
    assert f"output directory {output} already holds a run" in capsys.readouterr().err
    assert (output / "metrics.json").read_text() == "previous run\n"
    assert os.listdir(output) == ["metrics.json"]


def test_overwrite_replaces_an_existing_run(tmp_path):
    output = tmp_path / "demo"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    demo.claim_output_dir(str(output), overwrite=True)
    assert output.is_dir() and os.listdir(output) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        demo.claim_output_dir(str(tmp_path / "file"), overwrite=True)


def test_a_corrupt_dataset_stops_before_training(tmp_path, capsys):
    root = ensure_shapes_dataset(str(tmp_path / "datasets"), SPEC, printer=lambda line: None)
    json_file = os.path.join(root, "annotations", "instances_val.json")
    with open(json_file, "w") as f:
        f.write("{ not json")
    assert run(tmp_path, "--output-dir", str(tmp_path / "second")) == 2
    assert f"annotation file {json_file} is not valid JSON" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "second" / "metrics.json")


@pytest.mark.slow
def test_comparison_trains_gn_and_bn_at_two_batch_sizes(tmp_path):
    output = tmp_path / "compare"
    assert run(tmp_path, "--output-dir", str(output), "--compare") == 0
    results = json.loads((output / "compare.json").read_text())
    assert list(results) == ["gn_batch2", "bn_batch2", "gn_batch1", "bn_batch1"]
    assert all(result["iteration"] == 4 and "segm/AP50" in result for result in results.values())
    for name, norm, batch, lr in [("gn_batch2", "GN", 2, 0.02), ("bn_batch1", "BN", 1, 0.01)]:
        cfg = yaml.safe_load((output / name / "config.yaml").read_text())
        norms = [cfg["MODEL"][part]["NORM"] for part in ("RESNETS", "FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")]
        assert norms == [norm] * 4
        assert cfg["SOLVER"]["IMS_PER_BATCH"] == batch and cfg["SOLVER"]["BASE_LR"] == pytest.approx(lr)
    assert cv2.imread(str(output / "compare.png")) is not None


def test_report_reads_detectron2_metrics(tmp_path):
    path = tmp_path / "metrics.json"
    records = [
        {"iteration": 0, "total_loss": 3.0},
        {"iteration": 1, "total_loss": 2.0, "bbox/AP": 1.0, "bbox/AP50": 2.0, "segm/AP": 0.5, "segm/AP50": 1.5},
        {"iteration": 3, "total_loss": 1.0},
        {"iteration": 4, "bbox/AP": 10.0, "bbox/AP50": 20.0, "segm/AP": 5.0, "segm/AP50": float("nan")},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    read = read_metrics(str(path))
    # the evaluation after the final step is stamped with the count (4), the others with the step index
    assert final_metrics(read) == {"iteration": 4, "bbox/AP": 10.0, "bbox/AP50": 20.0, "segm/AP": 5.0,
                                   "segm/AP50": read[-1]["segm/AP50"]}  # fmt: skip
    assert comparison_table({"gn_batch2": read}).splitlines()[-1] == "| gn_batch2 | 10.0 | 20.0 | 5.0 | n/a |"
    path.write_text(json.dumps(records[0]) + "\n{broken\n")
    with pytest.raises(ValueError, match=f"{path}, line 2: not a JSON record"):
        read_metrics(str(path))


def test_demo_config_is_the_papers_from_scratch_setting():
    """configs/demo: GN everywhere through our registered modules, nothing frozen, no weights."""
    cfg = load_config(demo.DEFAULT_CONFIG)
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_fpn_gn_backbone"
    assert cfg.MODEL.ROI_BOX_HEAD.NAME == "FastRCNNConvFCGNHead" and cfg.MODEL.ROI_BOX_HEAD.NUM_CONV == 4
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "MaskRCNNConvUpsampleGNHead"
    model = build_model(cfg)
    assert count_modules(model, torch.nn.GroupNorm) == count_modules(model, GroupNorm) == 36
    # ResNet-18: stem, 2 per block, 3 projection shortcuts (1 + 16 + 3); FPN 4 lateral + 4 output; heads 4 + 4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_default_output_folders():
    assert demo.parse_args([]).output_dir == os.path.join(REPO, "output", "demo")
    assert demo.parse_args(["--compare"]).output_dir == os.path.join(REPO, "output", "demo_compare")
    assert demo.parse_args(["--output-dir", "elsewhere"]).output_dir == "elsewhere"
