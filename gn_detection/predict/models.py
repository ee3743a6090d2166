"""Running a model on one image as ``tools/predict.py`` does: the eager model of
a config and its weights, or the TorchScript export (``export/model_traced.ts``).

Both take an image as an (H, W, 3) uint8 array in the config's pixel format
(``INPUT.FORMAT``), resize it as detectron2's test loader does
(``ResizeShortestEdge`` to ``INPUT.MIN_SIZE_TEST`` / ``INPUT.MAX_SIZE_TEST``)
and return the detections at the image's own size, as ``Instances`` on the CPU.
"""

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from gn_detection.checkpoint import CheckpointError
from gn_detection.engine.weights import load_inference_model


class Predictor:
    """The resize and the call shared by :class:`EagerPredictor` and :class:`TracedPredictor`."""

    def __init__(self, cfg):
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)

    def resized_tensor(self, image: np.ndarray) -> torch.Tensor:
        resized = self.resize.get_transform(image).apply_image(image)
        return torch.as_tensor(resized.astype("float32").transpose(2, 0, 1), device=self.device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Instances:
        return self.predict(image).to("cpu")


class EagerPredictor(Predictor):
    """The config's model with every weight from ``MODEL.WEIGHTS``: a missing or
    incompatible checkpoint is a ``CheckpointError`` when this is built."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.model = load_inference_model(cfg)

    def predict(self, image: np.ndarray) -> Instances:
        height, width = image.shape[:2]
        inputs = {"image": self.resized_tensor(image), "height": height, "width": width}
        return self.model([inputs])[0]["instances"]


class TracedPredictor(Predictor):
    """The TorchScript export of ``tools/export_checkpoint.py`` (image in,
    detections at the input's size out; ``import gn_detection`` registers the
    GroupNorm op it calls). Its boxes are scaled to the image's size as the
    eager model scales them; its masks, pasted at the resized size, are scaled
    with nearest-neighbour interpolation, so mask edges can differ from the
    eager model's by up to one resized pixel. The file is checked when this is
    built: a missing or unreadable one, or outputs that do not fit the config
    (boxes and classes, plus masks when ``MODEL.MASK_ON``), are a ``CheckpointError``."""

    def __init__(self, cfg, path: str):
        super().__init__(cfg)
        if not os.path.isfile(path):
            raise CheckpointError(f"traced model {path} not found")
        try:
            self.model = torch.jit.load(path, map_location=self.device)
        except Exception as error:
            message = f"{path}: not a readable TorchScript model: {type(error).__name__}: {error}"
            raise CheckpointError(message) from error
        # the traced model returns the Instances fields sorted by name, then the image size
        self.fields = sorted(["pred_boxes", "pred_classes", "scores"] + (["pred_masks"] if cfg.MODEL.MASK_ON else []))
        self.path = path
        size = cfg.INPUT.MIN_SIZE_TEST
        try:
            self.predict(np.zeros((size, size, 3), np.uint8))
        except Exception as error:
            raise CheckpointError(f"traced model {path} does not run on the config's input: {error}") from error

    def predict(self, image: np.ndarray) -> Instances:
        height, width = image.shape[:2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            outputs = self.model(self.resized_tensor(image))
        if len(outputs) != len(self.fields) + 1:
            raise CheckpointError(
                f"traced model {self.path} returns {len(outputs)} outputs; the config's model returns "
                f"{len(self.fields) + 1} ({', '.join(self.fields)}, image size)"
            )
        values = dict(zip(self.fields, outputs))
        resized_height, resized_width = (int(v) for v in outputs[-1])
        boxes = Boxes(values["pred_boxes"])
        boxes.scale(width / resized_width, height / resized_height)
        boxes.clip((height, width))
        instances = Instances((height, width), pred_boxes=boxes, scores=values["scores"],
                              pred_classes=values["pred_classes"])  # fmt: skip
        if "pred_masks" in values:
            masks = values["pred_masks"].float()[:, None]
            instances.pred_masks = F.interpolate(masks, size=(height, width), mode="nearest")[:, 0] > 0.5
        return instances
