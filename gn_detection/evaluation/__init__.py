"""COCO evaluation: saved results files scored with faster-coco-eval or pycocotools
(:mod:`coco_json`, needs no detectron2), and detectron2's ``COCOEvaluator`` scoring
with faster-coco-eval (:mod:`coco_evaluator`)."""

from gn_detection.evaluation.coco_json import BACKENDS, IOU_TYPES, STAT_NAMES, evaluate_results_file

__all__ = ["BACKENDS", "IOU_TYPES", "STAT_NAMES", "evaluate_results_file"]
