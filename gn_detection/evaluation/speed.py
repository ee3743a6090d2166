"""How much faster the training-time COCO evaluation scores with faster-coco-eval
than with pycocotools, on a results file of realistic size (behind
``tools/benchmark_coco_eval.py``).

The COCO fixture (100 val2014 images, 734 detections per type) is replicated
into a larger ground truth and results list with new image and annotation ids.
Each repetition times, for each backend in alternating order, what
:class:`gn_detection.evaluation.coco_evaluator.COCOEvaluator` runs once its
predictions are gathered: detectron2's ``_evaluate_predictions_on_coco`` (load
the results, evaluate, accumulate, summarize) with that backend's COCOeval, on
the same pycocotools ground truth. The ratios are per repetition, their median
reported; the 12 numbers of both backends are compared too.
"""

import contextlib
import copy
import io
import json
import statistics
import time
from typing import Dict, List, Sequence, Tuple

from detectron2.evaluation.coco_evaluation import _evaluate_predictions_on_coco
from pycocotools.coco import COCO

from gn_detection.evaluation.coco_json import STAT_NAMES, coco_api


def replicate(ground_truth: dict, results: List[dict], copies: int) -> Tuple[dict, List[dict]]:
    """``copies`` copies of every image, annotation and detection, with ids made unique."""
    image_step = max(image["id"] for image in ground_truth["images"]) + 1
    annotation_step = max(annotation["id"] for annotation in ground_truth["annotations"]) + 1
    images, annotations, detections = [], [], []
    for k in range(copies):
        images += [{**image, "id": image["id"] + k * image_step} for image in ground_truth["images"]]
        annotations += [{**a, "id": a["id"] + k * annotation_step, "image_id": a["image_id"] + k * image_step}
                        for a in ground_truth["annotations"]]  # fmt: skip
        detections += [{**d, "image_id": d["image_id"] + k * image_step} for d in results]
    return {**ground_truth, "images": images, "annotations": annotations}, detections


def coco_from_dict(ground_truth: dict) -> COCO:
    coco = COCO()
    coco.dataset = ground_truth
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def score(coco_gt: COCO, results: List[dict], iou_type: str, backend: str) -> Tuple[float, List[float]]:
    """(seconds, the 12 numbers) of one scoring as the evaluator does it."""
    cocoeval_class = coco_api(backend)[1]
    detections = copy.deepcopy(results)  # loadRes adds fields to the detections it is given
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluated = _evaluate_predictions_on_coco(coco_gt, detections, iou_type, cocoeval_fn=cocoeval_class)
    return time.perf_counter() - start, [float(v) for v in evaluated.stats[: len(STAT_NAMES)]]


def benchmark(fixture_dir: str, copies: int, repeats: int, iou_types: Sequence[str] = ("bbox", "segm"),
              printer=print) -> Dict[str, dict]:  # fmt: skip
    """Times both backends on the fixture replicated ``copies`` times; returns
    {iou_type: {images, detections, seconds per backend, ratios, max stat difference}}."""
    with open(f"{fixture_dir}/instances_val2014_100.json") as f:
        base = json.load(f)
    files = {"bbox": "instances_val2014_fakebbox100_results.json", "segm": "instances_val2014_fakesegm100_results.json"}
    report = {}
    for iou_type in iou_types:
        with open(f"{fixture_dir}/{files[iou_type]}") as f:
            ground_truth, results = replicate(base, json.load(f), copies)
        coco_gt = coco_from_dict(ground_truth)
        seconds = {"pycocotools": [], "faster-coco-eval": []}
        stats = {}
        for repeat in range(repeats):
            order = ("pycocotools", "faster-coco-eval") if repeat % 2 == 0 else ("faster-coco-eval", "pycocotools")
            for backend in order:
                elapsed, stats[backend] = score(coco_gt, results, iou_type, backend)
                seconds[backend].append(elapsed)
            printer(f"{iou_type} repetition {repeat + 1}/{repeats}: pycocotools {seconds['pycocotools'][-1]:.2f} s, "
                    f"faster-coco-eval {seconds['faster-coco-eval'][-1]:.2f} s")  # fmt: skip
        ratios = [slow / fast for slow, fast in zip(seconds["pycocotools"], seconds["faster-coco-eval"])]
        difference = max(abs(a - b) for a, b in zip(stats["pycocotools"], stats["faster-coco-eval"]))
        report[iou_type] = {"images": len(ground_truth["images"]), "detections": len(results), "seconds": seconds,
                            "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
                            "median_ratio": statistics.median(ratios), "ratios": ratios,
                            "max_stat_difference": difference}  # fmt: skip
    return report
