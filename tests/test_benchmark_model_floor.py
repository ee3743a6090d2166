"""The elementwise stand-ins of tools/benchmark_model.py: a step with them does
(a)'s work (same losses, same GN calls, same RoIs), and the profile counts them
as GN ops, once each, instead of ours."""

import sys

import pytest
import torch
from detectron2.modeling import build_model
from detection_helpers import REPO, random_batch, tiny_config

sys.path.insert(0, str(REPO / "tools"))
import benchmark_model  # noqa: E402

from gn_detection import GroupNorm  # noqa: E402


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    cfg = tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml", ["MODEL.BACKBONE.FREEZE_AT", "0"])
    model = build_model(cfg)
    benchmark_model.confident_class_scores(model)
    return model, random_batch(num_instances=(2, 1))


def profiled_groups(runner, mode):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        runner.train_step() if mode == "train" else runner.inference()
    return benchmark_model.classify_profile(prof.events())


def calls_by_shape(by_shape, group):
    return {(part, shape): calls for (g, part, shape), (_, calls) in by_shape.items() if g == group}


def test_stand_ins_keep_the_step_of_the_model(model_and_batch):
    model, batch = model_and_batch
    real = benchmark_model.Runner(model, batch, seed=0)
    floor = benchmark_model.FloorRunner(model, batch, seed=0)
    real.train_step()
    floor.train_step()  # records the GN outputs
    assert len(floor.recorded["train"]) > 0
    floor.train_step()  # stands in
    assert floor.last_losses == pytest.approx(real.last_losses, rel=1e-6, abs=1e-7)
    assert floor.last_storage["roi_head/num_fg_samples"] == real.last_storage["roi_head/num_fg_samples"]
    real.inference()
    floor.inference()
    floor.inference()
    assert floor.last_detections == real.last_detections
    assert all("forward" not in vars(m) for m in model.modules() if isinstance(m, GroupNorm))


def test_profile_counts_each_stand_in_once_as_gn(model_and_batch):
    model, batch = model_and_batch
    real = benchmark_model.Runner(model, batch, seed=0)
    floor = benchmark_model.FloorRunner(model, batch, seed=0)
    floor.train_step()
    ours, ours_shapes = profiled_groups(real, "train")
    stand_ins, stand_in_shapes = profiled_groups(floor, "train")
    assert ours["gn_ours"]["calls"] > 0 and stand_ins["gn_ours"]["calls"] == 0
    assert stand_ins["gn_floor"]["calls"] == ours["gn_ours"]["calls"]
    assert stand_ins["gn_floor"]["fwd"] > 0 and stand_ins["gn_floor"]["bwd"] > 0
    # the relu inside a fused layer's stand-in is not counted again as a ReLU
    assert stand_ins["relu"]["calls"] == ours["relu"]["calls"]
    assert calls_by_shape(stand_in_shapes, "gn_floor") == calls_by_shape(ours_shapes, "gn_ours")


def test_stand_ins_refuse_a_step_that_differs_from_the_recorded_one(model_and_batch):
    model, batch = model_and_batch
    floor = benchmark_model.FloorRunner(model, batch, seed=0)
    floor.train_step()
    floor.recorded["train"].pop()
    with pytest.raises(RuntimeError, match="differ from the recorded"):
        floor.train_step()
    assert all("forward" not in vars(m) for m in model.modules() if isinstance(m, GroupNorm))
