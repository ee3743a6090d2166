"""Two training processes on the CPU through detectron2's ``launch`` (Gloo), on
the built-in shapes dataset registered with ``--dataset``:

- ``tools/train_net.py --num-gpus 2`` trains and is killed (SIGKILL to all its
  processes) once it has written a checkpoint;
- ``--resume`` in 2 processes continues from that checkpoint on both ranks, the
  ranks' weights stay identical, and the run ends with a COCO evaluation
  gathered from both processes;
- the same weights evaluated in 1 process (``--eval-only``) give the same
  detections and the same COCO numbers.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from checkpoint_helpers import FPN_GN_CONFIG, one_thread, training_overrides
from detectron2.engine import launch
from distributed_helpers import train_and_record

from gn_detection import engine
from gn_detection.checkpoint import load_torch
from gn_detection.data import ShapesSpec, ensure_shapes_dataset

REPO = FPN_GN_CONFIG.parents[2]
MORE_ITERATIONS = 2


def shapes_datasets(root):
    """``--dataset`` arguments of a small generated shapes dataset (4 classes)."""
    folder = ensure_shapes_dataset(str(root), ShapesSpec(num_train=4, num_val=4, image_size=64), printer=lambda _: None)
    return [
        "--dataset", "distributed_shapes_train", f"{folder}/annotations/instances_train.json", f"{folder}/train",
        "--dataset", "distributed_shapes_val", f"{folder}/annotations/instances_val.json", f"{folder}/val",
    ]  # fmt: skip


def overrides(output_dir, max_iter):
    return [
        *training_overrides(output_dir, "distributed_shapes_train", max_iter, num_classes=4),
        "DATASETS.TEST", "('distributed_shapes_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "INPUT.MASK_FORMAT", "bitmask",
    ]  # fmt: skip


def train_until_killed(datasets, output_dir):
    """Runs ``tools/train_net.py --num-gpus 2`` for many iterations and kills its
    process group as soon as ``last_checkpoint`` names a checkpoint; returns it."""
    command = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(FPN_GN_CONFIG),
               "--num-gpus", "2", "--dist-url", "auto", *datasets, *overrides(output_dir, max_iter=1000)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    marker = output_dir / "last_checkpoint"
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return marker.read_text().strip()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    datasets = shapes_datasets(root / "data")
    output = root / "run"
    checkpoint = train_until_killed(datasets, output)
    iteration = load_torch(output / checkpoint)["iteration"] + 1
    records = root / "records"
    records.mkdir()
    resume = engine.argument_parser().parse_args(
        ["--config-file", str(FPN_GN_CONFIG), "--resume", *datasets, *overrides(output, iteration + MORE_ITERATIONS)]
    )
    launch(train_and_record, 2, dist_url="auto", args=(resume, str(records)))
    ranks = [torch.load(records / f"rank{rank}.pth", weights_only=True) for rank in range(2)]
    metrics = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    evaluation = [line for line in metrics if "bbox/AP" in line][-1]  # the final one, written by rank 0
    gathered = {}
    for key, value in evaluation.items():
        if key.startswith(("bbox/", "segm/")):
            task, name = key.split("/", 1)
            gathered.setdefault(task, {})[name] = value
    return datasets, output, checkpoint, iteration, ranks, gathered


def test_killed_run_resumes_on_every_rank(runs):
    _, output, checkpoint, iteration, ranks, _ = runs
    saved = load_torch(output / checkpoint)["model"]
    for record in ranks:
        assert record["world_size"] == 2 and record["threads"] == 1  # each process its share of the 2 cores
        assert record["start_iter"] == iteration
        for name, value in saved.items():
            assert torch.equal(record["loaded"][name], value), name
    final = load_torch(output / "model_final.pth")
    assert final["iteration"] == iteration + MORE_ITERATIONS - 1
    assert any(not torch.equal(final["model"][name], saved[name]) for name in saved), "the resumed run did not train"
    for name, value in final["model"].items():  # the ranks stayed identical, and rank 0 saved them
        assert torch.equal(ranks[0]["final"][name], value), name
        assert torch.equal(ranks[1]["final"][name], value), name


def test_ap_of_two_processes_equals_one_process(runs):
    datasets, output, _, _, _, gathered = runs
    assert set(gathered) == {"bbox", "segm"} and gathered["bbox"]["AP50"] >= 0
    arguments = engine.argument_parser().parse_args(
        ["--config-file", str(FPN_GN_CONFIG), "--eval-only", *datasets,
         *overrides(output.parent / "eval", 1), "MODEL.WEIGHTS", str(output / "model_final.pth")]
    )  # fmt: skip
    with one_thread():  # as in each of the 2 processes, so that the arithmetic is the same
        single = engine.main(arguments)
    for task in ("bbox", "segm"):
        assert set(single[task]) == set(gathered[task])
        for name, value in single[task].items():
            assert value == pytest.approx(gathered[task][name], abs=1e-9, nan_ok=True), (task, name)
    # the detections themselves: rank 0 gathered both ranks' images, and they match the single process's
    two, one = (json.loads((run / "inference" / "distributed_shapes_val" / "coco_instances_results.json").read_text())
                for run in (output, output.parent / "eval"))  # fmt: skip
    assert {d["image_id"] for d in two} == {1, 2, 3, 4}

    def key(detection):
        return detection["image_id"], -detection["score"], detection["category_id"]

    assert sorted(two, key=key) == sorted(one, key=key)
