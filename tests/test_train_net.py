"""Training with gn_detection.engine (behind tools/train_net.py) end to end on a
tiny COCO-format dataset written here and registered with ``--dataset`` (two
random images with box and polygon annotations): training, the final COCO
evaluation (bbox and segm, all 12 numbers), metrics on disk, ``--eval-only``
from the saved checkpoint; the number of classes taken from the dataset or
checked against it; bad datasets and checkpoints named before any work."""

import json
import subprocess
import sys

import numpy as np
import pytest
from checkpoint_helpers import FPN_GN_CONFIG, training_overrides
from PIL import Image

from gn_detection import engine
from gn_detection.checkpoint import CheckpointError
from gn_detection.data.coco_checked import DatasetError
from gn_detection.evaluation import STAT_NAMES

REPO = FPN_GN_CONFIG.parents[2]
DATASET = "gn_detection_tiny_coco"


def write_tiny_coco(root, categories=("a", "b")):
    """Two 64x96 images, two objects each, of the first two ``categories``; returns the JSON path."""
    root.mkdir(parents=True, exist_ok=True)
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
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(categories)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def arguments(output_dir, data_root, flags=(), more=(), name=DATASET, num_classes=None):
    """``--dataset NAME`` of the tiny dataset in ``data_root``, trained and tested on."""
    dataset = ["--dataset", name, str(data_root / "annotations.json"), str(data_root)]
    overrides = [*training_overrides(output_dir, name, max_iter=2, num_classes=num_classes),
                 "DATASETS.TEST", f"('{name}',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "TEST.DETECTIONS_PER_IMAGE", "10", *more]  # fmt: skip
    return engine.argument_parser().parse_args(["--config-file", str(FPN_GN_CONFIG), *flags, *dataset, *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration run on the tiny dataset, NUM_CLASSES left to the config (80)."""
    root = tmp_path_factory.mktemp("train_net")
    write_tiny_coco(root / "data")
    engine.main(arguments(root / "output", root / "data"))
    return root


def test_train_evaluate_and_eval_only(trained):
    output = trained / "output"
    assert "MODEL.ROI_HEADS.NUM_CLASSES set to 2, the number of classes of" in (output / "log.txt").read_text()
    assert engine.load_config(output / "config.yaml").MODEL.ROI_HEADS.NUM_CLASSES == 2
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in metrics if "total_loss" in line] == [1]
    final = {key: value for line in metrics for key, value in line.items() if key.startswith(("bbox/", "segm/"))}
    assert {f"{task}/{name}" for task in ("bbox", "segm") for name in STAT_NAMES} <= set(final)
    assert (output / "model_final.pth").exists()
    assert list(output.glob("events.out.tfevents.*"))
    assert json.loads((output / "inference" / DATASET / "coco_instances_results.json").read_text())

    weights = ["MODEL.WEIGHTS", str(output / "model_final.pth")]
    evaluated = engine.main(arguments(trained / "eval", trained / "data", ["--eval-only"], weights))
    for task in ("bbox", "segm"):  # one dataset: results not keyed by its name
        for name in STAT_NAMES:
            assert evaluated[task][name] == pytest.approx(final[f"{task}/{name}"], nan_ok=True), (task, name)


def test_num_classes_given_must_match_the_dataset(tmp_path):
    write_tiny_coco(tmp_path / "data")
    with pytest.raises(DatasetError, match="NUM_CLASSES 3 was given, but the datasets .* have 2 classes"):
        engine.setup(arguments(tmp_path / "output", tmp_path / "data", num_classes=3, name="gn_detection_tiny_2"))
    assert not (tmp_path / "output").exists()


def test_datasets_with_other_classes_are_refused(tmp_path):
    write_tiny_coco(tmp_path / "train")
    write_tiny_coco(tmp_path / "val", categories=("a", "c"))
    val = ["--dataset", "gn_detection_tiny_val", str(tmp_path / "val" / "annotations.json"), str(tmp_path / "val")]
    args = arguments(tmp_path / "output", tmp_path / "train", val, ["DATASETS.TEST", "('gn_detection_tiny_val',)"],
                     name="gn_detection_tiny_train")  # fmt: skip
    with pytest.raises(DatasetError, match="have different classes"):
        engine.setup(args)


def test_eval_only_refuses_a_checkpoint_for_other_classes(trained, tmp_path):
    write_tiny_coco(tmp_path / "data", categories=("a", "b", "c"))
    weights = str(trained / "output" / "model_final.pth")
    args = arguments(tmp_path / "eval", tmp_path / "data", ["--eval-only"], ["MODEL.WEIGHTS", weights],
                     name="gn_detection_tiny_3")  # fmt: skip
    with pytest.raises(CheckpointError, match=f"checkpoint {weights} does not fit.*cls_score.weight"):
        engine.main(args)


def test_command_line_names_a_missing_annotation_file(tmp_path):
    missing = tmp_path / "instances.json"
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(FPN_GN_CONFIG),
               "--dataset", "mine", str(missing), str(tmp_path), "DATASETS.TRAIN", "('mine',)"]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 2
    assert f"error: annotation file {missing} does not exist" in finished.stderr
