"""One training step and one inference, on tiny random images, for C4 and FPN
models with GN, frozen BN, LN and from scratch; the empty cases (an image without
ground truth, a batch without RoIs); and a checkpoint round trip."""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer
from detectron2.utils.events import EventStorage
from detection_helpers import random_batch, tiny_config

EXPECTED_LOSSES = {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}

LN_EVERYWHERE = ["MODEL.RESNETS.NORM", "LN", "MODEL.FPN.NORM", "LN", "MODEL.ROI_BOX_HEAD.NORM", "LN"]
LN_EVERYWHERE += ["MODEL.ROI_MASK_HEAD.NORM", "LN"]
CASES = {
    "C4-GN": ("table4_c4/mask_rcnn_R_50_C4_gn.yaml", []),
    "C4-BN*": ("table4_c4/mask_rcnn_R_50_C4_bn_frozen.yaml", []),
    "C4-LN": ("table4_c4/mask_rcnn_R_50_C4_ln.yaml", []),
    "C4-GN-scratch": ("table4_c4/mask_rcnn_R_50_C4_gn.yaml", ["MODEL.BACKBONE.FREEZE_AT", "0"]),
    "FPN-GN": ("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml", []),
    "FPN-BN*": ("table6_fpn/mask_rcnn_R_50_FPN_bn_frozen_2x.yaml", []),
    "FPN-LN": ("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml", LN_EVERYWHERE),
    "FPN-GN-scratch": ("table7_scratch/scratch_mask_rcnn_R_50_FPN_gn_3x.yaml", []),
}


def train_step(cfg, model, batch):
    """One SGD step with the config's optimizer; returns the losses."""
    optimizer = build_optimizer(cfg, model)
    model.train()
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return losses


def infer(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch)


@pytest.mark.parametrize("case", CASES)
def test_train_step_and_inference(case):
    torch.manual_seed(0)
    cfg = tiny_config(*CASES[case])
    model = build_model(cfg)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = train_step(cfg, model, random_batch())
    assert set(losses) == EXPECTED_LOSSES
    assert all(torch.isfinite(loss) for loss in losses.values())
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith("roi_heads.") for n in changed)

    instances = infer(model, random_batch(num_images=1, seed=1))[0]["instances"]
    assert instances.has("pred_boxes") and instances.has("scores") and instances.has("pred_classes")
    assert instances.pred_masks.shape == (len(instances), 64, 96)
    if cfg.MODEL.RESNETS.NORM != "FrozenBN":
        # with random weights only a normalized backbone keeps activations finite
        assert len(instances) == cfg.TEST.DETECTIONS_PER_IMAGE


@pytest.mark.parametrize("name", ["table4_c4/mask_rcnn_R_50_C4_gn.yaml", "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"])
def test_image_without_ground_truth(name):
    torch.manual_seed(0)
    cfg = tiny_config(name)
    model = build_model(cfg)
    losses = train_step(cfg, model, random_batch(num_instances=(0, 2)))
    assert all(torch.isfinite(loss) for loss in losses.values())
    losses = train_step(cfg, model, random_batch(num_images=1, num_instances=(0,)))
    assert all(torch.isfinite(loss) for loss in losses.values())


@pytest.mark.parametrize("name", ["table4_c4/mask_rcnn_R_50_C4_gn.yaml", "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"])
def test_batch_without_rois(name):
    """A proposal minimum size larger than the images removes every proposal; with no
    ground truth to append, the RoI heads (GN on 0 RoIs) see an empty batch."""
    torch.manual_seed(0)
    cfg = tiny_config(name, ["MODEL.PROPOSAL_GENERATOR.MIN_SIZE", "1000"])
    model = build_model(cfg)
    losses = train_step(cfg, model, random_batch(num_instances=(0, 0)))
    assert set(losses) == EXPECTED_LOSSES
    assert all(torch.isfinite(loss) for loss in losses.values())
    for output in infer(model, random_batch(seed=2)):
        assert len(output["instances"]) == 0


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml")
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_test")
    torch.manual_seed(1)
    restored = build_model(cfg)
    DetectionCheckpointer(restored).load(str(tmp_path / "model_test.pth"))
    for (name, want), (_, got) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(want, got), name
