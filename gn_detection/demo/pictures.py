"""Pictures of a trained model's predictions next to the ground truth, drawn by
detectron2's ``Visualizer`` with the dataset's class names and colors.

Masks are drawn one by one with ``Visualizer.draw_binary_mask``, which keeps
holes open (a ring stays a ring); ``overlay_instances`` fills each contour of a
mask as a polygon, and so paints over the hole.
"""

import os
from typing import List

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer
from pycocotools import mask as mask_util

from gn_detection.checkpoint import GNCheckpointer
from gn_detection.config import add_gn_config

SCORE_THRESHOLD = 0.5
SCALE = 3  # the demo's images are small; draw them larger so labels stay readable
TITLE_HEIGHT = 28
LABEL_SIZE = 4  # in source-image pixels, like Visualizer's own font sizes


def _titled(image_rgb: np.ndarray, title: str) -> np.ndarray:
    band = np.full((TITLE_HEIGHT, image_rgb.shape[1], 3), 255, np.uint8)
    cv2.putText(band, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image_rgb], axis=0)


def _draw(image_rgb: np.ndarray, metadata, boxes, masks, classes, labels) -> np.ndarray:
    """``image_rgb`` scaled by ``SCALE`` with each instance's mask, box and label, in its class color."""
    visualizer = Visualizer(image_rgb, metadata, scale=SCALE)
    for box, mask, category, label in zip(boxes, masks, classes, labels):
        color = np.array(metadata.thing_colors[category]) / 255.0
        visualizer.draw_binary_mask(mask.astype(np.uint8), color=color, edge_color=color, alpha=0.45)
        visualizer.draw_box(box, edge_color=color)
        visualizer.draw_text(label, (box[0], box[1]), horizontal_alignment="left", color="white", font_size=LABEL_SIZE)
    return visualizer.get_output().get_image()


def _truth(image_rgb: np.ndarray, record: dict, metadata) -> np.ndarray:
    annotations = record.get("annotations", [])
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    masks = [mask_util.decode(a["segmentation"]) for a in annotations]
    classes = [a["category_id"] for a in annotations]
    labels = [metadata.thing_classes[c] for c in classes]
    return _draw(image_rgb, metadata, boxes, masks, classes, labels)


def _prediction(image_rgb: np.ndarray, instances, metadata) -> np.ndarray:
    classes = instances.pred_classes.tolist()
    labels = [f"{metadata.thing_classes[c]} {score:.0%}" for c, score in zip(classes, instances.scores.tolist())]
    boxes = instances.pred_boxes.tensor.tolist()
    return _draw(image_rgb, metadata, boxes, instances.pred_masks.numpy(), classes, labels)


@torch.no_grad()
def draw_predictions(config_file: str, weights: str, output_dir: str, count: int) -> List[str]:
    """Draws the first ``count`` images of the config's first test set: ground truth
    on the left, predictions with score >= 0.5 on the right. Returns the PNG paths."""
    cfg = add_gn_config(get_cfg())
    cfg.merge_from_file(config_file)
    model = build_model(cfg)
    GNCheckpointer(model).load(weights)
    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = cv2.imread(record["file_name"])  # BGR, the models' input format
        resized = resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.transpose(2, 0, 1).astype("float32"))
        height, width = image.shape[:2]
        instances = model([{"image": tensor, "height": height, "width": width}])[0]["instances"].to("cpu")
        instances = instances[instances.scores >= SCORE_THRESHOLD]
        rgb = image[:, :, ::-1]
        truth = _truth(rgb, record, metadata)
        predicted = _prediction(rgb, instances, metadata)
        panel = np.concatenate(
            [_titled(truth, "ground truth"), _titled(predicted, f"prediction (score >= {SCORE_THRESHOLD})")], axis=1
        )
        path = os.path.join(output_dir, f"val_{record['image_id']:06d}.png")
        cv2.imwrite(path, panel[:, :, ::-1])
        paths.append(path)
    return paths
