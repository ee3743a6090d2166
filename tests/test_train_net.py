"""Training with gn_detection.engine (behind tools/train_net.py) end to end on a tiny COCO-format dataset written here
(two random images with box and polygon annotations): two training iterations,
the final COCO evaluation (bbox and segm), metrics on disk, and ``--eval-only``
from the saved checkpoint."""

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detection_helpers import CONFIGS
from PIL import Image

from gn_detection import engine

DATASET = "gn_detection_tiny_coco"


def write_tiny_coco(root):
    """Two 64x96 images, two objects each, two categories; returns the JSON path."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in (1, 2):
        name = f"{image_id}.png"
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(root / name)
        images.append({"id": image_id, "file_name": name, "height": 64, "width": 96})
        for k, (x, y, w, h) in enumerate([(8, 8, 30, 24), (50, 20, 36, 30)]):
            annotations.append(
                {
                    "id": 10 * image_id + k,
                    "image_id": image_id,
                    "category_id": k + 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


@pytest.fixture
def tiny_dataset(tmp_path):
    annotations = write_tiny_coco(tmp_path)
    register_coco_instances(DATASET, {}, str(annotations), str(tmp_path))
    yield
    DatasetCatalog.remove(DATASET)


def arguments(output_dir, flags=(), more_overrides=()):
    overrides = [
        "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32", "MODEL.RPN.POST_NMS_TOPK_TEST", "8",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "SOLVER.BASE_LR", "0.001",
        "DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", f"('{DATASET}',)", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    ]  # fmt: skip
    config = str(CONFIGS / "table6_fpn" / "mask_rcnn_R_50_FPN_gn_2x.yaml")
    return engine.argument_parser().parse_args(["--config-file", config, *flags, *overrides, *more_overrides])


def test_train_evaluate_and_eval_only(tiny_dataset, tmp_path):
    output = tmp_path / "output"
    engine.main(arguments(output))
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in metrics if "total_loss" in line] == [1]
    final = {key: value for line in metrics for key, value in line.items() if key.startswith(("bbox/", "segm/"))}
    assert {"bbox/AP", "bbox/AP50", "segm/AP", "segm/AP75"} <= set(final)
    assert (output / "model_final.pth").exists()
    assert list(output.glob("events.out.tfevents.*"))
    assert json.loads((output / "inference" / DATASET / "coco_instances_results.json").read_text())

    weights = ["MODEL.WEIGHTS", str(output / "model_final.pth")]
    evaluated = engine.main(arguments(tmp_path / "eval", ["--eval-only"], weights))  # one dataset: not keyed by name
    assert evaluated["bbox"]["AP"] == pytest.approx(final["bbox/AP"])
    assert evaluated["segm"]["AP"] == pytest.approx(final["segm/AP"])
