"""Loading a whole model's weights for inference (``--eval-only``, ``tools/predict.py``).

detectron2's checkpointer loads what matches and only warns about the rest, which
suits fine-tuning (a new box predictor starts from scratch) but not inference: a
checkpoint for another number of classes would be evaluated with randomly
initialized predictors. ``InferenceCheckpointer`` makes every model weight that
the file leaves unset or gives another shape an error that names the file.
"""

import os

from detectron2.modeling import build_model

from gn_detection.checkpoint import CheckpointError, GNCheckpointer


class InferenceCheckpointer(GNCheckpointer):
    """``GNCheckpointer`` that refuses checkpoints that do not set every model
    weight with its shape (see the module docstring); extra keys in the file
    (e.g. an ImageNet classifier) are only logged, as detectron2 does."""

    def load(self, path, checkpointables=None):
        if not path:
            raise CheckpointError("no weights to run: set MODEL.WEIGHTS to a trained model's checkpoint")
        if "://" not in path and not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {path} not found")
        self._path = path
        return super().load(path, checkpointables)

    def _log_incompatible_keys(self, incompatible):
        super()._log_incompatible_keys(incompatible)
        shapes = [f"{name}: {tuple(have)} in the file, {tuple(want)} in the model"
                  for name, have, want in incompatible.incorrect_shapes]  # fmt: skip
        wrong = {name for name, _, _ in incompatible.incorrect_shapes}
        missing = [name for name in incompatible.missing_keys if name not in wrong]
        problems = []
        if shapes:
            problems.append(f"{len(shapes)} weights of another shape ({'; '.join(shapes[:5])}" +
                            (", ..." if len(shapes) > 5 else "") + ")")  # fmt: skip
        if missing:
            problems.append(f"{len(missing)} model weights missing ({', '.join(missing[:5])}" +
                            (", ..." if len(missing) > 5 else "") + ")")  # fmt: skip
        if problems:
            raise CheckpointError(
                f"checkpoint {self._path} does not fit the config's model: {'; '.join(problems)}. "
                "Use the config the checkpoint was trained with (its run's config.yaml), "
                "with the same MODEL.ROI_HEADS.NUM_CLASSES"
            )


def load_inference_model(cfg, resume_dir=None):
    """The config's model, in eval mode, with every weight from ``cfg.MODEL.WEIGHTS``
    (or, with ``resume_dir``, from that folder's last checkpoint when it has one)."""
    model = build_model(cfg)
    checkpointer = InferenceCheckpointer(model, save_dir=resume_dir or "")
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume_dir is not None)
    return model.eval()
