"""Resuming with gn_detection.engine.Trainer: a run stopped after N iterations
(at its periodic checkpoint) and resumed is compared with an uninterrupted run
of N+M iterations: iteration counter, learning rate, scheduler state, weights
and optimizer momentum. Deterministic settings: one image per batch from a
one-image dataset (so the data order, which detectron2 does not checkpoint,
cannot differ), no flip, CPU, and the random sampling of anchors and RoIs
seeded from the iteration number right before each forward."""

import random

import numpy as np
import pytest
import torch
from checkpoint_helpers import register_one_image_coco, training_config, unregister
from detectron2.engine import HookBase

from gn_detection.engine import Trainer

DATASET = "gn_detection_checkpoint_resume"
N, M = 2, 2


class SeedEachIteration(HookBase):
    """Seeds torch, numpy and random from the iteration number right before each
    model forward, where the anchor and RoI sampling draw. (Seeding in
    before_step is not enough: a trainer's first step also builds the data
    loader's iterator, which draws from torch's global generator, so a resumed
    run would sample differently at its first step.)"""

    def before_train(self):
        trainer = self.trainer

        def seed(module, inputs):
            value = 1000 + trainer.iter
            torch.manual_seed(value)
            np.random.seed(value)
            random.seed(value)

        self._handle = trainer.model.register_forward_pre_hook(seed)

    def after_train(self):
        self._handle.remove()


class Killed(Exception):
    pass


class KillAfter(HookBase):
    """Stops training by an exception after iteration ``count`` - 1 (after the
    checkpoint hook, which runs earlier in the same step)."""

    def __init__(self, count):
        self.count = count

    def after_step(self):
        if self.trainer.iter == self.count - 1:
            raise Killed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run, and the run killed after N iterations then resumed
    (with its weights right after resuming)."""
    root = tmp_path_factory.mktemp("resume")
    register_one_image_coco(root, DATASET)
    try:
        straight = make_trainer(root / "straight", DATASET)
        straight.resume_or_load(resume=False)
        straight.train()

        interrupted = make_trainer(root / "interrupted", DATASET, [KillAfter(N)])
        interrupted.resume_or_load(resume=False)
        with pytest.raises(Killed):
            interrupted.train()
        assert (root / "interrupted" / "last_checkpoint").read_text() == f"model_{N - 1:07d}.pth"

        resumed = make_trainer(root / "interrupted", DATASET)
        resumed.resume_or_load(resume=True)
        assert resumed.start_iter == N
        after_resume = {k: v.clone() for k, v in resumed.model.state_dict().items()}
        resumed.train()
    finally:
        unregister(DATASET)
    return straight, resumed, after_resume


def make_trainer(output_dir, dataset, extra_hooks=()):
    # warm-up over the first iterations and an LR step inside the resumed part
    cfg = training_config(output_dir, dataset, N + M, ["SOLVER.CHECKPOINT_PERIOD", str(N),
                          "SOLVER.WARMUP_ITERS", str(N), "SOLVER.STEPS", f"({N + 1},)"])  # fmt: skip
    torch.manual_seed(0)  # the same initial weights in both runs
    trainer = Trainer(cfg)
    trainer.register_hooks([SeedEachIteration(), *extra_hooks])
    return trainer


def test_resume_restores_iteration_lr_and_schedule(runs):
    straight, resumed, after_resume = runs
    assert resumed.iter == straight.iter == N + M
    lr = [group["lr"] for group in resumed.optimizer.param_groups]
    assert lr == pytest.approx([group["lr"] for group in straight.optimizer.param_groups])
    assert lr[0] == pytest.approx(0.001 * 0.1)  # past the LR step
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    changed = [name for name, value in resumed.model.state_dict().items() if not torch.equal(value, after_resume[name])]
    assert changed, "the resumed iterations did not train"


def test_resume_weights_and_momentum_match(runs):
    straight, resumed, _ = runs
    final, reference = resumed.model.state_dict(), straight.model.state_dict()
    assert set(final) == set(reference)
    for name in reference:
        torch.testing.assert_close(final[name], reference[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    momentum = [resumed.optimizer.state[p]["momentum_buffer"] for p in resumed.model.parameters() if p.requires_grad]
    expected = [straight.optimizer.state[p]["momentum_buffer"] for p in straight.model.parameters() if p.requires_grad]
    for a, b in zip(momentum, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
