"""The training-time evaluator (gn_detection.evaluation.coco_evaluator.COCOEvaluator,
used by gn_detection.engine.Trainer) fed the real COCO fixture's detections
through detectron2's own ``process`` path: with faster-coco-eval it gives the
same 12 numbers as with pycocotools, and those of pycocotools scoring the
results file the evaluator writes. Masks pass through losslessly, so segm
matches pycocotools' published numbers to 1e-9; boxes pass through float32
(detectron2's ``Boxes``), which moves a few of the fixture's IoUs across a
threshold, so bbox matches them to 0.1 AP."""

import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from fixture_data import COCO_EVAL_FIXTURE, require
from pycocotools import mask as mask_util

from gn_detection.data.coco_checked import register_coco_dataset
from gn_detection.evaluation import STAT_NAMES, evaluate_results_file
from gn_detection.evaluation.coco_evaluator import COCOEvaluator

pytestmark = require(COCO_EVAL_FIXTURE, "COCO evaluation fixture")
DATASET = "gn_detection_coco_eval_fixture"
GT = COCO_EVAL_FIXTURE / "instances_val2014_100.json"
RESULTS = {
    "bbox": COCO_EVAL_FIXTURE / "instances_val2014_fakebbox100_results.json",
    "segm": COCO_EVAL_FIXTURE / "instances_val2014_fakesegm100_results.json",
}


@pytest.fixture(scope="module")
def dataset():
    register_coco_dataset(DATASET, str(GT), str(COCO_EVAL_FIXTURE))
    yield DATASET
    DatasetCatalog.remove(DATASET)
    MetadataCatalog.remove(DATASET)


def model_outputs(iou_type, dataset):
    """The fixture's detections as detectron2 model outputs, one (inputs, outputs) per image."""
    images = {image["id"]: image for image in json.loads(GT.read_text())["images"]}
    to_contiguous = MetadataCatalog.get(dataset).thing_dataset_id_to_contiguous_id
    detections = {}
    for detection in json.loads(RESULTS[iou_type].read_text()):
        detections.setdefault(detection["image_id"], []).append(detection)
    for image_id, found in sorted(detections.items()):
        size = (images[image_id]["height"], images[image_id]["width"])
        fields = {
            "scores": torch.tensor([d["score"] for d in found]),
            "pred_classes": torch.tensor([to_contiguous[d["category_id"]] for d in found]),
        }
        if iou_type == "bbox":
            boxes = [BoxMode.convert(d["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) for d in found]
        else:
            masks = np.stack([mask_util.decode(d["segmentation"]) for d in found])
            fields["pred_masks"] = torch.from_numpy(masks.astype(bool))
            boxes = [BoxMode.convert(list(mask_util.toBbox(d["segmentation"])), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
                     for d in found]  # fmt: skip
        fields["pred_boxes"] = Boxes(torch.tensor(boxes, dtype=torch.float64))
        yield [{"image_id": image_id}], [{"instances": Instances(size, **fields)}]


def evaluate(iou_type, backend, dataset, tmp_path):
    evaluator = COCOEvaluator(dataset, tasks=(iou_type,), distributed=False, output_dir=str(tmp_path), backend=backend)
    evaluator.reset()
    for inputs, outputs in model_outputs(iou_type, dataset):
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()[iou_type]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_fast_backend_gives_the_official_numbers(iou_type, dataset, tmp_path):
    expected = json.loads((COCO_EVAL_FIXTURE / "expected_stats_pycocotools.json").read_text())
    assert tuple(expected["keys"]) == STAT_NAMES
    fast = evaluate(iou_type, "faster-coco-eval", dataset, tmp_path / "fast")
    official = evaluate(iou_type, "pycocotools", dataset, tmp_path / "official")
    assert set(STAT_NAMES) <= set(fast) and set(fast) == set(official)
    for name in fast:  # the 12 numbers and the per-category AP
        assert fast[name] == pytest.approx(official[name], abs=1e-9, nan_ok=True), name
    written = tmp_path / "fast" / "coco_instances_results.json"
    rescored = evaluate_results_file(str(GT), str(written), iou_type, "pycocotools")
    published = dict(zip(STAT_NAMES, expected[iou_type]))
    for name in STAT_NAMES:
        assert fast[name] == pytest.approx(100 * rescored[name], abs=1e-9), name
        assert fast[name] == pytest.approx(100 * published[name], abs=1e-7 if iou_type == "segm" else 0.1), name
    assert len(json.loads(written.read_text())) == len(json.loads(RESULTS[iou_type].read_text()))


def test_unknown_backend_is_named(dataset):
    with pytest.raises(ValueError, match="backend must be one of"):
        COCOEvaluator(dataset, tasks=("bbox",), distributed=False, backend="cocoapi")
