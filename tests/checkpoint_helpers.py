"""Helpers of the test_checkpoint_* tests: a one-image COCO-format dataset
written by the test and training settings for a few CPU iterations."""

import contextlib
import json

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detection_helpers import CONFIGS, load_config
from PIL import Image

FPN_GN_CONFIG = CONFIGS / "table6_fpn" / "mask_rcnn_R_50_FPN_gn_2x.yaml"


def register_one_image_coco(root, name):
    """One 64x96 image with two boxes (two categories), registered as ``name``."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / "1.png")
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": k + 1, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
        for k, (x, y, w, h) in enumerate([(8, 8, 30, 24), (50, 20, 36, 30)])
    ]  # fmt: skip
    coco = {
        "images": [{"id": 1, "file_name": "1.png", "height": 64, "width": 96}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(coco))
    register_coco_instances(name, {}, str(path), str(root))


def unregister(name):
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def training_overrides(output_dir, dataset, max_iter, num_classes=2):
    """KEY VALUE pairs: tiny, deterministic CPU training on ``dataset`` (no flip,
    one image per batch, no evaluation, few RoIs, narrow layers); with
    ``num_classes`` None, MODEL.ROI_HEADS.NUM_CLASSES is left to the config."""
    classes = [] if num_classes is None else ["MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)]
    return [
        *classes, "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
        "MODEL.RPN.POST_NMS_TOPK_TEST", "8", "SOLVER.BASE_LR", "0.001",
        "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1000", "INPUT.RANDOM_FLIP", "none",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "SEED", "0",
        # a narrow ResNet-50-FPN (8 GN groups): same structure and names, a fraction of the CPU time
        "MODEL.GN.NUM_GROUPS", "8", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "32", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    ]  # fmt: skip


def training_config(output_dir, dataset, max_iter, extra=()):
    """The FPN GN config with :func:`training_overrides` and ``extra``, frozen."""
    cfg = load_config(FPN_GN_CONFIG, [*training_overrides(output_dir, dataset, max_iter), *extra])
    cfg.freeze()
    return cfg


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: the narrow test models gain little from
    a second thread, and on a busy machine lose much (each parallel op waits for
    its slowest thread; measured here: 1.5 s instead of 0.03 s per 64-px image)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
