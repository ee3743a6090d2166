"""Predictions drawn on an image by detectron2's ``Visualizer``: masks, boxes and
``class score`` labels, with the dataset's class names and colors when its
metadata has them, else class indices and per-instance colors."""

import numpy as np
from detectron2.utils.visualizer import ColorMode, Visualizer


def draw_predictions(image_rgb: np.ndarray, instances, metadata) -> np.ndarray:
    """``image_rgb`` (H, W, 3) with ``instances`` drawn on it, as an RGB array."""
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors") else ColorMode.IMAGE
    visualizer = Visualizer(image_rgb, metadata, instance_mode=mode)
    return visualizer.draw_instance_predictions(instances, jittering=False).get_image()
