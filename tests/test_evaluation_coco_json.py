"""gn_detection.evaluation (behind tools/evaluate_json.py) reproduces pycocotools'
published COCOeval numbers on real COCO annotations (../shared/data/coco_eval_fixture)
with both backends."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixture_data import COCO_EVAL_FIXTURE as FIXTURE
from fixture_data import require

from gn_detection.evaluation import BACKENDS, STAT_NAMES, evaluate_results_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = {
    "bbox": FIXTURE / "instances_val2014_fakebbox100_results.json",
    "segm": FIXTURE / "instances_val2014_fakesegm100_results.json",
}
GT = FIXTURE / "instances_val2014_100.json"

pytestmark = require(GT, "COCO evaluation fixture")


@pytest.fixture(scope="module")
def expected():
    data = json.loads((FIXTURE / "expected_stats_pycocotools.json").read_text())
    assert tuple(data["keys"]) == STAT_NAMES
    return data


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_reproduces_pycocotools_stats(backend, iou_type, expected):
    stats = evaluate_results_file(str(GT), str(RESULTS[iou_type]), iou_type, backend)
    assert list(stats) == list(STAT_NAMES)
    for name, value, want in zip(expected["keys"], stats.values(), expected[iou_type]):
        assert abs(value - want) <= 1e-9, (name, value, want)


def test_command_line_writes_json(tmp_path, expected):
    out = tmp_path / "stats.json"
    command = [sys.executable, str(REPO / "tools" / "evaluate_json.py"), "--gt", str(GT)]
    command += ["--results", str(RESULTS["bbox"]), "--type", "bbox", "--json", str(out)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "AP50 0.6970" in printed
    written = json.loads(out.read_text())
    assert written["type"] == "bbox" and written["backend"] == "faster-coco-eval"
    assert list(written["stats"].values()) == pytest.approx(expected["bbox"], abs=1e-9)


def test_empty_results_are_a_clear_error(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="holds no detections"):
        evaluate_results_file(str(GT), str(empty), "bbox")


def test_segm_ignores_the_detections_boxes(tmp_path, expected):
    """detectron2's results files hold a box beside each mask; segm must still use mask areas."""
    results = json.loads(RESULTS["segm"].read_text())
    for result in results:
        result["bbox"] = [0.0, 0.0, 1000.0, 1000.0]  # a box area that would make every detection "large"
    with_boxes = tmp_path / "segm_with_boxes.json"
    with_boxes.write_text(json.dumps(results))
    stats = evaluate_results_file(str(GT), str(with_boxes), "segm")
    assert list(stats.values()) == pytest.approx(expected["segm"], abs=1e-9)
