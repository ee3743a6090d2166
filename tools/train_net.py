#!/usr/bin/env python
"""Trains and evaluates gn_detection's models with detectron2's ``DefaultTrainer``.

    python tools/train_net.py --config-file configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank R \\
        --dist-url tcp://HOST:PORT          # on each machine
    python tools/train_net.py --config-file CONFIG --resume   # continue from OUTPUT_DIR/last_checkpoint

Trailing ``KEY VALUE`` pairs override the config. Datasets come from detectron2's
builtin registration (COCO 2017 under ``$DETECTRON2_DATASETS/coco``); the test
sets are scored by ``COCOEvaluator`` (bbox, and segm for Mask R-CNN); metrics go
to OUTPUT_DIR through detectron2's JSON and TensorBoard writers.
"""

import os
import weakref

from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator

import gn_detection  # also registers the backbones and RoI heads that the configs name
from gn_detection.checkpoint import GNCheckpointer


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


def load_config(config_file: str, opts):
    """detectron2's defaults, MODEL.GN, the file, the ``KEY VALUE`` overrides."""
    cfg = gn_detection.add_gn_config(get_cfg())
    cfg.merge_from_file(config_file)
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


if __name__ == "__main__":
    arguments = default_argument_parser().parse_args()
    launch(
        main,
        arguments.num_gpus,
        num_machines=arguments.num_machines,
        machine_rank=arguments.machine_rank,
        dist_url=arguments.dist_url,
        args=(arguments,),
    )
