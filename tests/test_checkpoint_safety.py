"""Safe loading: pickles that would run code are refused before anything runs
(the marker file their payload would write never appears), damaged files raise
errors that name them, and plain array pickles of every protocol load."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detection_helpers import REPO, tiny_config

from gn_detection.checkpoint import CheckpointError, GNCheckpointer, UnsafeCheckpointError, load_pickle, load_torch



class WritesMarker:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_pickle(tmp_path, name="evil.pkl"):
    marker = tmp_path / "marker"
    path = tmp_path / name
    payload = {"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "x": WritesMarker(marker)}}
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path, marker


def test_malicious_pickle_is_refused_naming_file_and_global(tmp_path):
    path, marker = malicious_pickle(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_pickle(path)
    assert str(path) in str(error.value)
    assert "system" in str(error.value)  # the forbidden global (posix.system)
    assert not marker.exists()


def test_malicious_pickle_refused_by_checkpointer_and_converter(tmp_path):
    path, marker = malicious_pickle(tmp_path)
    model = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        GNCheckpointer(model).load(str(path))
    command = [sys.executable, str(REPO / "tools" / "convert_detectron_gn.py"), str(path), str(tmp_path / "out.pkl")]
    converter = subprocess.run(command, capture_output=True, text=True)
    assert converter.returncode == 1 and str(path) in converter.stderr
    assert not marker.exists()
    assert not (tmp_path / "out.pkl").exists()


def test_malicious_pth_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "x": WritesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        load_torch(path)
    assert str(path) in str(error.value)
    model = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"))
    with pytest.raises(UnsafeCheckpointError):
        GNCheckpointer(model).load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_truncated_checkpoint_error_names_file(tmp_path, suffix):
    model = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"))
    path = tmp_path / f"model{suffix}"
    state = {k: v for k, v in list(model.state_dict().items())[:20]}
    if suffix == ".pkl":
        data = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}
        path.write_bytes(pickle.dumps(data, protocol=4))
    else:
        torch.save({"model": state}, path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(CheckpointError) as error:
        GNCheckpointer(model).load(str(path))
    assert str(path) in str(error.value)
    assert "truncated or corrupt" in str(error.value)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=str(path)):
        GNCheckpointer(model).load(str(path))


def test_missing_file_error_names_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pickle(tmp_path / "absent.pkl")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_array_pickles_load(tmp_path, protocol):
    from collections import OrderedDict

    data = {
        "blobs": OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float64(2.5)),
        "cfg": "MODEL: {}",
        "more": [(1, 2.0, None, True, b"x")],
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["blobs"]["a"], data["blobs"]["a"])
    assert loaded["blobs"]["b"] == 2.5 and loaded["cfg"] == "MODEL: {}" and loaded["more"] == data["more"]


def test_trainer_checkpoints_load_weights_only(tmp_path):
    """A checkpoint as DefaultTrainer writes it (model + trainer state) loads back."""
    model = build_model(tiny_config("table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = GNCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_0000001", iteration=1)
    extra = GNCheckpointer(model, str(tmp_path), optimizer=optimizer).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
