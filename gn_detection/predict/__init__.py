"""A trained model's predictions on images and videos (``tools/predict.py``):
eager or TorchScript models (:mod:`models`), inputs (:mod:`inputs`), pictures
(:mod:`drawing`, :mod:`video`), COCO results (:mod:`results`), the command
(:mod:`command`)."""

from gn_detection.predict.models import EagerPredictor, TracedPredictor

__all__ = ["EagerPredictor", "TracedPredictor"]
