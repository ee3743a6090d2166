"""Scores a COCO results file against COCO annotations: the 12 standard COCOeval
numbers, from faster-coco-eval (C++ evaluate/accumulate, the same numbers as the
official pycocotools) or from pycocotools itself."""

import contextlib
import io
import json

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster-coco-eval", "pycocotools")
IOU_TYPES = ("bbox", "segm")


def coco_api(backend: str):
    """(COCO, COCOeval) classes of ``backend``."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def evaluate_results_file(gt_path: str, results_path: str, iou_type: str, backend: str = "faster-coco-eval") -> dict:
    """The 12 COCOeval summary numbers (default parameters) as {name: value};
    segm ignores the detections' boxes (see below)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    coco, coco_eval = coco_api(backend)
    with open(results_path) as f:
        results = json.load(f)
    if not isinstance(results, list) or not results:
        raise ValueError(f"{results_path} holds no detections (expected a non-empty JSON list)")
    if iou_type == "segm":
        # A detection's box, when present (detectron2 writes both), would become its
        # area for the small/medium/large ranges; segm scores by mask area, as
        # detectron2's COCOEvaluator does.
        results = [{key: value for key, value in r.items() if key != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):  # both APIs print progress to stdout
        ground_truth = coco(gt_path)
        detections = ground_truth.loadRes(results)
        evaluator = coco_eval(ground_truth, detections, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(value) for value in evaluator.stats[: len(STAT_NAMES)])))
