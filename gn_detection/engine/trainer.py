"""The ``Trainer`` of gn_detection: detectron2's ``DefaultTrainer`` with COCO
evaluation by faster-coco-eval, checkpoints read safely, and multi-process
training on CPUs as well as GPUs; and the config set-up around it.

``tools/train_net.py`` is a thin command over :func:`run`; detectron2's
``launch`` runs :func:`main` once per process.
"""

import logging
import os
import sys
import weakref

import torch
from detectron2.config import get_cfg
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from gn_detection.checkpoint import CheckpointError, GNCheckpointer
from gn_detection.config import add_gn_config
from gn_detection.data.coco_checked import DatasetError
from gn_detection.engine.datasets import add_dataset_argument, prepare_datasets
from gn_detection.engine.weights import load_inference_model
from gn_detection.evaluation.coco_evaluator import COCOEvaluator


def wrap_for_processes(model):
    """detectron2's ``create_ddp_model`` (DistributedDataParallel when there are
    several processes), with ``device_ids`` only for a model on a GPU: detectron2
    always passes ``[local rank]``, which DDP refuses for a CPU module."""
    on_gpu = next(model.parameters()).device.type == "cuda"
    return create_ddp_model(model, broadcast_buffers=False, device_ids=[comm.get_local_rank()] if on_gpu else None)


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` (SGD with the config's schedule, checkpoints,
    JSON/TensorBoard/console writers, periodic evaluation) with

    - COCO evaluation by :class:`gn_detection.evaluation.coco_evaluator.COCOEvaluator`
      (faster-coco-eval when installed, and all 12 COCO numbers);
    - checkpoints read safely by ``GNCheckpointer``;
    - several processes on CPUs (Gloo) as on GPUs (NCCL): ``DefaultTrainer``'s
      constructor hard-codes a GPU-only DDP wrap, so this one builds the same parts
      in the same order with :func:`wrap_for_processes`.
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_for_processes(model)
        loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = GNCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_folder)


def argument_parser():
    """detectron2's ``default_argument_parser`` (config file, resume, eval-only,
    processes and machines, ``KEY VALUE`` overrides) and ``--dataset``."""
    parser = default_argument_parser()
    add_dataset_argument(parser)
    return parser


def load_config(config_file: str, opts=()):
    """detectron2's defaults, MODEL.GN, the file, the ``KEY VALUE`` overrides."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} not found")
    cfg = add_gn_config(get_cfg())
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def prepared_config(args):
    """The config of ``args`` with its ``--dataset`` entries registered and the
    number of classes checked or set (unfrozen), and the line to log about it."""
    cfg = load_config(args.config_file, args.opts)
    note = prepare_datasets(cfg, args.dataset, args.opts, training=not args.eval_only)
    return cfg, note


def setup(args):
    """The frozen config of ``args`` (see :func:`prepared_config`), with detectron2's
    logging and output-dir set-up."""
    cfg, note = prepared_config(args)
    cfg.freeze()
    default_setup(cfg, args)
    if note:
        logging.getLogger("detectron2").info(note)
    return cfg


def share_cpu_cores(cfg) -> None:
    """In a run of several processes on the CPU, gives each process its share of
    this machine's cores, unless OMP_NUM_THREADS sets the number: torch starts one
    thread per core in every process, and the processes then fight over the cores
    (a training step of the tests' narrow model, 2 processes on 2 cores that other
    jobs also used: 2.1 s with 2 threads per process, 0.18 s with one)."""
    if comm.get_world_size() > 1 and cfg.MODEL.DEVICE == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // comm.get_local_size()))


def main(args):
    """Trains (or, with ``--eval-only``, evaluates) and returns the test results."""
    cfg = setup(args)
    share_cpu_cores(cfg)
    if args.eval_only:
        model = load_inference_model(cfg, resume_dir=cfg.OUTPUT_DIR if args.resume else None)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(argv=None) -> int:
    """``tools/train_net.py``: runs :func:`main` in ``--num-gpus`` processes on this
    machine through detectron2's ``launch``. The config and the ``--dataset``
    entries are checked here first, so that a bad input stops before any worker
    starts; a bad dataset or checkpoint prints one error line that names it.
    Returns the exit status."""
    args = argument_parser().parse_args(argv)
    try:
        prepared_config(args)
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))  # fmt: skip
    except (DatasetError, CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
