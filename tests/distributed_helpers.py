"""What each process of the test_distributed_* runs (detectron2's ``launch``
starts fresh interpreters, which import this module by name): gn_detection's
training as ``gn_detection.engine.main`` does it, with the state of every rank
written to a folder for the test to compare."""

import os

import torch
from detectron2.utils import comm

from gn_detection import engine
from gn_detection.engine.trainer import share_cpu_cores


def weights_of(trainer):
    """The model's weights, without DDP's ``module.`` prefix, on the CPU."""
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def train_and_record(args, record_dir):
    """Resumes or starts training as ``engine.main`` does, then writes
    ``rank<R>.pth`` (start iteration, weights right after loading, final
    weights) for every rank."""
    cfg = engine.setup(args)
    share_cpu_cores(cfg)
    trainer = engine.Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    loaded = weights_of(trainer)
    trainer.train()
    record = {"start_iter": trainer.start_iter, "loaded": loaded, "final": weights_of(trainer),
              "world_size": comm.get_world_size(), "threads": torch.get_num_threads()}  # fmt: skip
    torch.save(record, os.path.join(record_dir, f"rank{comm.get_rank()}.pth"))
