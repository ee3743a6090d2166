"""Training, evaluation and prediction with detectron2's engine: the ``Trainer``,
config loading and command-line datasets behind ``tools/train_net.py``,
``tools/predict.py`` and the demo."""

from gn_detection.engine.trainer import Trainer, argument_parser, load_config, main, run, setup

__all__ = ["Trainer", "argument_parser", "load_config", "main", "run", "setup"]
