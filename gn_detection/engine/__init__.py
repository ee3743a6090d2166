"""Training and evaluation with detectron2's engine: the ``Trainer`` and config
loading behind ``tools/train_net.py`` and the demo."""

from gn_detection.engine.trainer import Trainer, argument_parser, load_config, main, setup

__all__ = ["Trainer", "argument_parser", "load_config", "main", "setup"]
