"""Predictions on real photos (../shared/data/coco_real16) with
gn_detection.predict (behind tools/predict.py), from a narrow GN Mask R-CNN
trained here for two iterations: the results file holds the same detections as
detectron2's COCOEvaluator on the same dataset and scores to the same AP with
gn_detection.evaluation; the TorchScript export gives the eager model's
detections; bad inputs are named and skipped, bad checkpoints stop the command
before any work; videos come out annotated frame by frame."""

import json
import math
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from checkpoint_helpers import FPN_GN_CONFIG, one_thread, training_overrides
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from fixture_data import COCO_REAL16, require

from gn_detection import engine
from gn_detection.checkpoint.export_run import export_run
from gn_detection.evaluation import evaluate_results_file
from gn_detection.predict import EagerPredictor, TracedPredictor
from gn_detection.predict.command import main as predict
from gn_detection.predict.results import ImageIds

pytestmark = require(COCO_REAL16, "coco_real16 photos")
REPO = FPN_GN_CONFIG.parents[2]
DATASET = ["--dataset", "coco_real16", str(COCO_REAL16 / "instances.json"), str(COCO_REAL16 / "images")]
IMAGES = sorted((COCO_REAL16 / "images").glob("*.jpg"))


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, single_thread):
    """A 2-iteration run on coco_real16 (evaluated on it at the end) and its TorchScript export."""
    output = tmp_path_factory.mktemp("predict") / "run"
    overrides = [*training_overrides(output, "coco_real16", max_iter=2, num_classes=None),
                 "DATASETS.TEST", "('coco_real16',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "TEST.DETECTIONS_PER_IMAGE", "5"]  # fmt: skip
    engine.main(engine.argument_parser().parse_args(["--config-file", str(FPN_GN_CONFIG), *DATASET, *overrides]))
    export_run(str(output), check_size=(64, 96), torch_export=False, onnx=False, printer=lambda _: None)
    return output


def command(run, *arguments):
    weights = ["MODEL.WEIGHTS", str(run / "model_final.pth")]
    return ["--config-file", str(run / "config.yaml"), *DATASET, *arguments, *weights]


def by_detection(results):
    return sorted(results, key=lambda r: (r["image_id"], -r["score"], r["category_id"]))


def test_results_match_the_evaluator_and_score_alike(run, tmp_path):
    out = tmp_path / "out"
    arguments = command(run, "--input", str(COCO_REAL16 / "images"), "--output", str(out), "--confidence", "1")
    assert predict(arguments) == 0  # nothing drawn: Visualizer takes about a second per 5 masks
    assert sorted(p.stem for p in out.glob("*.png")) == [p.stem for p in IMAGES]
    ours = json.loads((out / "coco_results.json").read_text())
    evaluator = json.loads((run / "inference" / "coco_real16" / "coco_instances_results.json").read_text())
    assert len(ours) == 5 * len(IMAGES)
    for a, b in zip(by_detection(ours), by_detection(evaluator)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-6) and a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
        assert a["segmentation"] == b["segmentation"]
    metrics = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
    final = [line for line in metrics if "segm/AP" in line][-1]
    for task in ("bbox", "segm"):
        stats = evaluate_results_file(str(COCO_REAL16 / "instances.json"), str(out / "coco_results.json"), task)
        for name, value in stats.items():
            assert 100 * value == pytest.approx(final[f"{task}/{name}"], abs=1e-6, nan_ok=True), (task, name)
    images = json.loads((out / "images.json").read_text())
    assert [image["id"] for image in images] == list(range(111, 127))  # coco_real16's own ids


def pixels_off_the_edge_band(eager_masks, traced_masks, radius):
    """Pixels where a traced mask differs from the eager one farther than ``radius`` from its edge."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    count = 0
    for a, b in zip(eager_masks.numpy().astype(np.uint8), traced_masks.numpy().astype(np.uint8)):
        count += int(((b > cv2.dilate(a, kernel)) | (b < cv2.erode(a, kernel))).sum())
    return count


def test_traced_export_gives_the_eager_detections(run):
    """At the model's input size the traced model's detections are the eager ones; on
    the original photos (6-7x larger here) its masks, pasted at the input size and
    scaled up, differ only within 3 input pixels of the eager masks' edges."""
    cfg = engine.load_config(run / "config.yaml", ["MODEL.WEIGHTS", str(run / "model_final.pth")])
    eager, traced = EagerPredictor(cfg), TracedPredictor(cfg, str(run / "export" / "model_traced.ts"))
    for path in IMAGES[:4]:
        original = read_image(str(path), format="BGR")
        resize = eager.resize.get_transform(original)
        at_input_size = cv2.resize(original, (resize.new_w, resize.new_h), interpolation=cv2.INTER_AREA)
        scale = max(resize.h / resize.new_h, resize.w / resize.new_w)
        for image, radius in ((at_input_size, 0), (original, math.ceil(3 * scale))):
            a, b = eager(image), traced(image)
            assert len(a) == len(b) == 5
            torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor, rtol=0, atol=1e-3)
            torch.testing.assert_close(b.scores, a.scores, rtol=0, atol=1e-6)
            assert torch.equal(b.pred_classes, a.pred_classes)
            assert pixels_off_the_edge_band(a.pred_masks, b.pred_masks, radius) == 0, (path, image.shape)


def test_bad_inputs_are_named_and_skipped(run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for path in IMAGES[:2]:
        shutil.copy(path, images / path.name)
    (images / "broken.jpg").write_text("not a JPEG")
    missing = tmp_path / "missing.jpg"
    out = tmp_path / "out"
    tool = [sys.executable, str(REPO / "tools" / "predict.py")]
    arguments = command(run, "--input", str(images), str(missing), "--output", str(out))
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # as one_thread() does in this process
    finished = subprocess.run([*tool, *arguments], capture_output=True, text=True, env=environment)
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert "error: 2 inputs failed and were skipped" in finished.stderr
    assert str(images / "broken.jpg") in finished.stderr and str(missing) in finished.stderr
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.stem + ".png" for p in IMAGES[:2])
    assert len(json.loads((out / "images.json").read_text())) == 2


@pytest.mark.parametrize("problem", ["missing weights", "other classes", "missing traced model"])
def test_bad_checkpoint_stops_before_any_work(run, tmp_path, capsys, problem):
    out = tmp_path / "out"
    arguments = command(run, "--input", str(IMAGES[0]), "--output", str(out))
    if problem == "missing weights":
        arguments[-1], expected = str(tmp_path / "model.pth"), f"checkpoint {tmp_path / 'model.pth'} not found"
    elif problem == "other classes":
        arguments += ["MODEL.ROI_HEADS.NUM_CLASSES", "3", "DATASETS.TEST", "()"]
        expected = f"checkpoint {run / 'model_final.pth'} does not fit the config's model"
    else:
        arguments += ["--traced", str(tmp_path / "model_traced.ts")]
        arguments = arguments[:2] + arguments[-2:] + arguments[2:-2]  # options before the KEY VALUE pairs
        expected = f"traced model {tmp_path / 'model_traced.ts'} not found"
    assert predict(arguments) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_without_a_registered_test_set_ids_are_class_indices(run, tmp_path):
    out = tmp_path / "out"
    arguments = ["--config-file", str(run / "config.yaml"), "--input", str(IMAGES[0]), str(IMAGES[1]), "--output",
                 str(out), "DATASETS.TEST", "()", "MODEL.WEIGHTS", str(run / "model_final.pth")]  # fmt: skip
    assert predict(arguments) == 0
    results = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2}
    assert all(0 <= r["category_id"] < 29 for r in results)  # contiguous indices, not COCO's ids (up to 90)


def test_video_frames_are_annotated(run, tmp_path):
    video = tmp_path / "clip.mp4"
    frames = [cv2.resize(cv2.imread(str(path)), (160, 120)) for path in IMAGES[:3]]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 120))
    for frame in frames:
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    assert predict(command(run, "--input", str(video), "--output", str(out), "--confidence", "0")) == 0
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = capture.read()
    capture.release()
    assert ok and count == 3 and first.shape == (120, 160, 3)
    assert not (out / "coco_results.json").exists()  # videos are not part of the results file


def test_image_ids_when_the_test_sets_annotations_are_absent(tmp_path):
    """e.g. detectron2's builtin coco_2017_val without COCO on this machine: ids are numbered."""
    name = "gn_detection_predict_absent_annotations"
    MetadataCatalog.get(name).set(json_file=str(tmp_path / "instances.json"))
    try:
        image_ids = ImageIds(name)
        assert [image_ids(str(IMAGES[1])), image_ids(str(IMAGES[0])), image_ids(str(IMAGES[1]))] == [1, 2, 1]
    finally:
        MetadataCatalog.remove(name)
