"""The Mask R-CNN benchmark's machinery (gn_detection.benchmark.model, .profile_share,
.memory) and the random batch builder it shares with the tests
(gn_detection.data.synthetic). No speed is asserted."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from detection_helpers import tiny_config
from torch import nn

from gn_detection import GroupNorm
from gn_detection.benchmark import memory, model as bench, profile_share
from gn_detection.data.synthetic import random_batch


def test_random_batch_masks_fill_exactly_their_boxes():
    counts = (0, 1, 7)
    batch = random_batch(num_images=3, height=40, width=70, num_instances=counts, num_classes=5, seed=4)
    for item, count in zip(batch, counts):
        instances = item["instances"]
        assert item["image"].shape == (3, 40, 70) and item["image"].dtype == torch.uint8
        assert (item["height"], item["width"]) == instances.image_size == (40, 70) and len(instances) == count
        boxes = instances.gt_boxes.tensor
        assert torch.equal(boxes, boxes.round()) and (boxes[:, 2:] > boxes[:, :2]).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= 70).all() and (boxes[:, 3] <= 40).all()
        # detectron2's own box of each mask is the instance's box, and the mask fills it
        assert torch.equal(instances.gt_masks.get_bounding_boxes().tensor, boxes)
        assert torch.equal(instances.gt_masks.tensor.sum(dim=(1, 2)).float(), instances.gt_boxes.area())
        assert ((instances.gt_classes >= 0) & (instances.gt_classes < 5)).all()
    again = random_batch(num_images=3, height=40, width=70, num_instances=counts, num_classes=5, seed=4)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batch, again))
    assert not torch.equal(random_batch(1, seed=5)[0]["image"], random_batch(1, seed=6)[0]["image"])
    assert [len(item["instances"]) for item in random_batch(num_images=2, num_instances=4)] == [4, 4]


def test_random_batch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one per image"):
        random_batch(num_images=2, num_instances=(1,))
    with pytest.raises(ValueError, match="at least 16x16"):
        random_batch(height=8, width=64)


class TinyNet(nn.Module):
    """Every op group the share counts: a frozen stem whose FrozenBatchNorm2d sees no
    gradient (one batch_norm op, no backward node), our fused GN+ReLU, PyTorch's GN
    then ReLU, and a FrozenBatchNorm2d in the gradient's path (mul + add)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1).requires_grad_(False)
        self.stem_norm = FrozenBatchNorm2d(32)
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(32, 32, 3, padding=1) for _ in range(3))
        self.ours = GroupNorm(8, 32, activation="relu")
        self.theirs = nn.GroupNorm(8, 32)
        self.frozen = FrozenBatchNorm2d(32)

    def forward(self, x):
        x = F.relu_(self.stem_norm(self.stem(x)))
        x = self.ours(self.conv1(x))
        x = F.relu_(self.theirs(self.conv2(x)))
        return self.frozen(self.conv3(x)).square().mean()


class TinyRunner:
    def __init__(self):
        torch.manual_seed(0)
        self.model, self.device, self.x = TinyNet(), torch.device("cpu"), torch.randn(2, 3, 16, 16)

    def train_step(self):
        self.model(self.x).backward()

    def inference(self):
        with torch.no_grad():
            self.model(self.x)


def test_op_groups_count_each_op_once():
    runner = TinyRunner()
    with profile_share.labelled_frozen_bn(runner.model), torch.profiler.profile() as prof:
        runner.train_step()
    calls = {key: value["calls"] for key, value in profile_share.group_times(prof.events(), "cpu").items()}
    assert calls == {
        ("gn_ours", "fwd"): 1, ("gn_ours", "bwd"): 1,
        ("gn_torch", "fwd"): 1, ("gn_torch", "bwd"): 1,
        ("relu", "fwd"): 2, ("relu", "bwd"): 1,
        # the stem's batch_norm makes no backward node: its sequence number is conv1's
        ("bn_frozen", "fwd"): 2, ("bn_frozen", "bwd"): 2,
        ("conv", "fwd"): 4, ("conv", "bwd"): 3,
    }
    assert not any(isinstance(m, FrozenBatchNorm2d) and m._forward_hooks for m in runner.model.modules())


def test_an_event_inside_one_of_its_group_is_not_counted_again():
    def event(thread, start, end):
        return SimpleNamespace(thread=thread, time_range=SimpleNamespace(start=start, end=end))

    outer, inner, later, other_thread = event(1, 0, 10), event(1, 2, 9), event(1, 10, 12), event(2, 3, 4)
    assert profile_share.outermost([inner, later, other_thread, outer]) == [outer, later, other_thread]


def test_shares_of_interleaved_profiles():
    profiles = profile_share.profile_interleaved({"a": TinyRunner(), "b": TinyRunner()}, steps=2)
    for modes in profiles.values():
        train = modes["train"]
        parts = [train["shares"][f"{group}_{part}"] for group in profile_share.NORM_ACT for part in ("fwd", "bwd")]
        assert train["shares"]["norm_act"] == pytest.approx(sum(parts))
        assert all(share > 0 for share in parts)
        everything = sum(share for key, share in train["shares"].items() if key != "norm_act")
        assert 0 < everything <= 1
        assert modes["infer"]["groups"][("gn_ours", "bwd")]["calls"] == 0


@pytest.fixture(scope="module")
def tiny_gn_model():
    torch.manual_seed(0)
    model = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml", ["MODEL.BACKBONE.FREEZE_AT", "0"]))
    bench.confident_class_scores(model)
    return model


def test_runner_repeats_its_step_and_keeps_the_weights(tiny_gn_model):
    runner = bench.Runner(tiny_gn_model, random_batch(num_instances=(2, 1)), seed=0)
    weights = {name: p.detach().clone() for name, p in tiny_gn_model.named_parameters()}
    gn_layers = sum(isinstance(m, GroupNorm) for m in tiny_gn_model.modules())
    assert bench.norm_output_dtypes(runner) == {"float32": gn_layers}  # a training step
    first = runner.last_losses
    runner.train_step()
    assert runner.last_losses == first and all(torch.isfinite(torch.tensor(list(first.values()))))
    assert runner.last_rois["roi_head/num_fg_samples"] > 0
    assert all(torch.equal(p, weights[name]) for name, p in tiny_gn_model.named_parameters())
    assert all(p.grad is not None for p in tiny_gn_model.parameters() if p.requires_grad)
    runner.inference()
    assert runner.last_detections == [5, 5]  # the tiny config's DETECTIONS_PER_IMAGE, kept by the class-0 bias


def test_our_gn_layers_keep_bfloat16_under_autocast(tiny_gn_model):
    """Under autocast our GN takes the bfloat16 a convolution gives and returns
    bfloat16 (statistics in float32), so no layer sends float32 on to the next."""
    runner = bench.Runner(tiny_gn_model, random_batch(num_instances=(2, 1)), seed=0, amp=torch.bfloat16)
    gn_layers = sum(isinstance(m, GroupNorm) for m in tiny_gn_model.modules())
    assert bench.norm_output_dtypes(runner) == {"bfloat16": gn_layers}
    assert all(torch.isfinite(torch.tensor(list(runner.last_losses.values()))))


def test_variants_are_the_same_model_with_different_norm_layers():
    models = bench.build_variants(["gn_ours", "bn_frozen"], "cpu", rois=64, seed=0)
    assert list(models) == ["gn_ours", "bn_frozen"]
    reference = bench.build_variants(["gn_d2"], "cpu", rois=64, seed=0)["gn_d2"].state_dict()
    ours = models["gn_ours"].state_dict()
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)
    counts = bench.count_norms(models["gn_ours"])
    assert counts["our GroupNorm"] > counts["with fused ReLU"] > 0 and counts["nn.GroupNorm"] == 0
    assert counts["FrozenBatchNorm2d"] == 0
    counts = bench.count_norms(models["bn_frozen"])
    assert counts["FrozenBatchNorm2d"] > 0 and counts["our GroupNorm"] == counts["nn.GroupNorm"] == 0


def test_peak_memory_child_reports_growing_peaks():
    settings = {"variant": "bn_frozen", "allocator": "tuned", "threads": 1, "rois": 8, "seed": 0, "images": 1,
                "height": 64, "width": 96, "instances": 1}
    peaks = memory.cpu_peak_in_child(settings)
    assert 0 < peaks["before"] < peaks["infer_peak"] <= peaks["train_peak"]
