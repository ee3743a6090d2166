"""Checkpoints of gn_detection: safe loading, the GN checkpointer used for
training, conversion of Detectron's GN models, export of trained models."""

from gn_detection.checkpoint.checkpointer import GNCheckpointer
from gn_detection.checkpoint.safe_load import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint_file,
    load_pickle,
    load_torch,
    save_detectron2_pickle,
)

__all__ = [
    "CheckpointError",
    "GNCheckpointer",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "load_pickle",
    "load_torch",
    "save_detectron2_pickle",
]
