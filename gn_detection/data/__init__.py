"""Datasets: COCO-format files checked before use, and the built-in shapes dataset of the demo."""

from gn_detection.data.coco_checked import (
    DatasetError,
    check_coco_dataset,
    load_checked_coco_json,
    register_checked_coco_instances,
)
from gn_detection.data.shapes import CATEGORIES, ShapesSpec, ensure_shapes_dataset, register_shapes_dataset

__all__ = [
    "CATEGORIES",
    "DatasetError",
    "ShapesSpec",
    "check_coco_dataset",
    "ensure_shapes_dataset",
    "load_checked_coco_json",
    "register_checked_coco_instances",
    "register_shapes_dataset",
]
