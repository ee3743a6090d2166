"""COCO evaluation: saved results files scored with faster-coco-eval or pycocotools."""

from gn_detection.evaluation.coco_json import BACKENDS, IOU_TYPES, STAT_NAMES, evaluate_results_file

__all__ = ["BACKENDS", "IOU_TYPES", "STAT_NAMES", "evaluate_results_file"]
