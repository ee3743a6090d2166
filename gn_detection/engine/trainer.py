"""The ``Trainer`` of gn_detection: detectron2's ``DefaultTrainer`` with COCO
evaluation and checkpoints read safely, and the config set-up around it.

``tools/train_net.py`` is a thin command over :func:`main`; detectron2's
``launch`` runs :func:`main` once per process.
"""

import os
import weakref

from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import COCOEvaluator

from gn_detection.checkpoint import GNCheckpointer
from gn_detection.config import add_gn_config


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` (SGD with the config's schedule, checkpoints,
    JSON/TensorBoard/console writers, periodic evaluation) with COCO evaluation,
    checkpoints read safely by ``GNCheckpointer``."""

    def build_hooks(self):
        # DefaultTrainer creates its DetectionCheckpointer just before this call;
        # replace it so that resume_or_load and the periodic checkpoint hook use GNCheckpointer.
        self.checkpointer = GNCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        return super().build_hooks()

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_folder)


def argument_parser():
    """detectron2's ``default_argument_parser`` (config file, resume, eval-only,
    processes and machines, ``KEY VALUE`` overrides)."""
    return default_argument_parser()


def load_config(config_file: str, opts=()):
    """detectron2's defaults, MODEL.GN, the file, the ``KEY VALUE`` overrides."""
    cfg = add_gn_config(get_cfg())
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def setup(args):
    """The frozen config of ``args``, with detectron2's logging and output-dir set-up."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    """Trains (or, with ``--eval-only``, evaluates) and returns the test results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        GNCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
