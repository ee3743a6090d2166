"""Helpers of the detection tests (test_modeling_*, test_configs): configs
shrunk for the CPU and tiny random batches with ground truth, so a training
step takes about a second."""

from pathlib import Path

import torch
from detectron2.structures import BitMasks, Boxes, Instances

from gn_detection.engine import load_config  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def shrink_for_cpu(cfg):
    """Few proposals and RoIs, 7x7 RoI features (C4 models pool 14x14 by default,
    and their res5 head costs in proportion), detections at any score, no weight
    download. Parameter shapes stay those of the configured model."""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 32
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 8
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 6
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    return cfg


def tiny_config(name, opts=()):
    """``configs/<name>`` shrunk for the CPU."""
    return shrink_for_cpu(load_config(CONFIGS / name, opts))


def random_batch(num_images=2, height=64, width=96, num_instances=(2, 3), seed=0):
    """Images (uint8 pixels, CHW) with random boxes, classes and box-shaped masks;
    ``num_instances`` gives the ground-truth count of each image (0 allowed)."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for index in range(num_images):
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        count = num_instances[index]
        corners = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
        sizes = 12 + torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        boxes = torch.cat([corners, corners + sizes], dim=1)
        masks = torch.zeros(count, height, width, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
            masks[k, y0:y1, x0:x1] = True
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.randint(0, 80, (count,), generator=generator)
        instances.gt_masks = BitMasks(masks)
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch


def count_modules(model, kind):
    return sum(isinstance(module, kind) for module in model.modules())
