"""Helpers of the detection tests (test_modeling_*, test_configs): configs
shrunk for the CPU and tiny random batches with ground truth, so a training
step takes about a second."""

from pathlib import Path

from gn_detection.data.synthetic import random_batch  # noqa: F401  (re-exported for the tests)
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


def count_modules(model, kind):
    return sum(isinstance(module, kind) for module in model.modules())
