"""The fine-tuning recipe of docs/USING_YOUR_DATA.md on real photos
(../shared/data/coco_real16, 29 COCO classes): a narrow GN Mask R-CNN trained
from scratch on the built-in shapes data (4 classes) as the demo does, its
``export/backbone.pkl`` written by export_run, then ``tools/train_net.py``
fine-tunes from it on coco_real16 (``--dataset``, NUM_CLASSES from the
dataset) and ``--eval-only`` scores the result as the run's own evaluation did."""

import json
import os
import subprocess
import sys

import pytest
import torch
from checkpoint_helpers import FPN_GN_CONFIG, one_thread, training_overrides
from fixture_data import COCO_REAL16, require

from gn_detection import engine
from gn_detection.checkpoint import load_pickle, load_torch
from gn_detection.checkpoint.export_run import export_run
from gn_detection.data import ShapesSpec, ensure_shapes_dataset
from gn_detection.evaluation import STAT_NAMES

pytestmark = require(COCO_REAL16, "coco_real16 photos")
REPO = FPN_GN_CONFIG.parents[2]
REAL16 = ["--dataset", "real16", str(COCO_REAL16 / "instances.json"), str(COCO_REAL16 / "images")]


def fine_tune_overrides(output, weights):
    return [*training_overrides(output, "real16", max_iter=3, num_classes=None), "MODEL.WEIGHTS", str(weights),
            "DATASETS.TEST", "('real16',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "TEST.DETECTIONS_PER_IMAGE", "5", "SEED", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_tune")
    shapes = ensure_shapes_dataset(str(root / "data"), ShapesSpec(num_train=4, num_val=2, image_size=64),
                                   printer=lambda _: None)  # fmt: skip
    pretrain = root / "pretrain"
    arguments = ["--config-file", str(FPN_GN_CONFIG), "--dataset", "fine_tune_shapes_train",
                 f"{shapes}/annotations/instances_train.json", f"{shapes}/train",
                 *training_overrides(pretrain, "fine_tune_shapes_train", max_iter=2, num_classes=None),
                 "INPUT.MASK_FORMAT", "bitmask"]  # fmt: skip
    with one_thread():
        engine.main(engine.argument_parser().parse_args(arguments))
    export_run(str(pretrain), torch_export=False, trace=False, onnx=False, printer=lambda _: None)

    fine_tune = root / "fine_tune"
    backbone = pretrain / "export" / "backbone.pkl"
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(FPN_GN_CONFIG), *REAL16,
               *fine_tune_overrides(fine_tune, backbone)]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return root, pretrain, fine_tune, backbone


def test_fine_tunes_from_the_exported_backbone(runs):
    _, pretrain, fine_tune, backbone = runs
    assert engine.load_config(pretrain / "config.yaml").MODEL.ROI_HEADS.NUM_CLASSES == 4
    assert engine.load_config(fine_tune / "config.yaml").MODEL.ROI_HEADS.NUM_CLASSES == 29
    assert "MODEL.ROI_HEADS.NUM_CLASSES set to 29" in (fine_tune / "log.txt").read_text()
    pretrained = {name: torch.from_numpy(value) for name, value in load_pickle(backbone)["model"].items()}
    initial = load_torch(pretrain / "model_final.pth")["model"]
    tuned = load_torch(fine_tune / "model_final.pth")["model"]
    assert tuned["roi_heads.box_predictor.cls_score.weight"].shape[0] == 30  # 29 classes + background
    assert set(pretrained) == {name for name in initial if name.startswith("backbone.")}

    def distance(weights):  # relative to the exported backbone, over all its tensors
        squares = sum(float((weights[name].float() - value.float()).norm() ** 2) for name, value in pretrained.items())
        return (squares / sum(float(value.float().norm() ** 2) for value in pretrained.values())) ** 0.5

    # 3 iterations at LR 0.001 move the loaded backbone little; a backbone that had
    # not been loaded would be another random initialization (seed 1, not 0)
    assert distance(tuned) < 0.01  # measured: 3e-5
    fresh = engine.Trainer.build_model(engine.load_config(fine_tune / "config.yaml", ["MODEL.DEVICE", "cpu"]))
    assert distance(fresh.state_dict()) > 0.5  # measured: 1.1


def test_eval_only_scores_the_fine_tuned_model(runs):
    root, _, fine_tune, backbone = runs
    arguments = ["--config-file", str(FPN_GN_CONFIG), "--eval-only", *REAL16,
                 *fine_tune_overrides(root / "eval", backbone), "MODEL.WEIGHTS", str(fine_tune / "model_final.pth")]
    with one_thread():
        evaluated = engine.main(engine.argument_parser().parse_args(arguments))
    metrics = [json.loads(line) for line in (fine_tune / "metrics.json").read_text().splitlines()]
    final = [line for line in metrics if "segm/AP" in line][-1]
    for task in ("bbox", "segm"):
        for name in STAT_NAMES:
            assert evaluated[task][name] == pytest.approx(final[f"{task}/{name}"], nan_ok=True), (task, name)
