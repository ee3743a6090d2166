"""Exports a finished training run into shareable files (behind
``tools/export_checkpoint.py``): the backbone, slim weights, the feature
extractor through ``torch.export``, the whole model as TorchScript, and the
feature extractor and the whole model as ONNX (GroupNorm as ONNX's own
GroupNormalization), each checked against the eager model before it is written."""

import os
import shutil
from typing import Dict, Optional, Sequence, Tuple

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gn_detection.checkpoint.export import (
    ExportError,
    FeatureExtractor,
    backbone_weights,
    export_features,
    export_metadata,
    exported_op_names,
    max_relative_difference,
    save_slim_checkpoint,
    trace_model,
)
from gn_detection.checkpoint.onnx_check import (
    as_arrays,
    check_graph,
    compare_outputs,
    counting_group_norm_calls,
    cpu_session,
    pair_detections,
    run_session,
)
from gn_detection.checkpoint.onnx_export import detection_adapter, export_features_onnx, export_model_onnx
from gn_detection.checkpoint.safe_load import CheckpointError, load_torch, save_detectron2_pickle
from gn_detection.config import add_gn_config
from gn_detection.layers import GroupNorm

GN_OP = "gn_detection.group_norm_forward.default"
GN_SCRIPT_OP = "gn_detection::group_norm_forward"
ONNX_TOLERANCE = 1e-3  # max |ONNX Runtime - eager|: feature maps, boxes (pixels), mask probabilities, scores


def load_run(config_file: str, weights: str):
    """(config on the CPU with no weights to download, model state dict) of a run."""
    if not os.path.isfile(config_file):
        raise CheckpointError(f"config file {config_file} not found")
    cfg = add_gn_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    data = load_torch(weights)
    if not isinstance(data, dict):
        raise CheckpointError(f"{weights}: expected a dict, got {type(data).__name__}")
    return cfg, data.get("model", data)


def build_loaded_model(cfg, model_state: Dict[str, torch.Tensor]) -> torch.nn.Module:
    """The config's model with ``model_state`` loaded exactly, in eval mode."""
    model = build_model(cfg)
    model.load_state_dict(model_state)
    return model.eval()


def has_group_norm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, GroupNorm) for m in module.modules())


def write_features_export(cfg, model_state, destination: str, size: Tuple[int, int], tolerance: float) -> float:
    """Writes the ``torch.export`` of the feature extractor; returns the checked difference."""
    extractor = FeatureExtractor(build_loaded_model(cfg, model_state))
    generator = torch.Generator().manual_seed(0)
    height, width = size
    example = torch.rand(2, 3, height, width, generator=generator) * 255
    exported = export_features(extractor, example)
    if has_group_norm(extractor) and GN_OP not in exported_op_names(exported):
        raise ExportError(f"the exported graph does not call {GN_OP}")
    check = torch.rand(1, 3, height + 32, width + 32, generator=generator) * 255
    difference = max(max_relative_difference(exported, extractor, images) for images in (example, check))
    if difference > tolerance:
        raise ExportError(f"exported features differ from eager ones by {difference:.3g} (tolerance {tolerance})")
    torch.export.save(exported, destination, extra_files={"gn_detection.json": export_metadata(extractor)})
    return difference


def write_traced_model(cfg, model_state, destination: str, size: Tuple[int, int], tolerance: float) -> float:
    """Writes the TorchScript trace of the whole model; returns the checked difference."""
    model = build_loaded_model(cfg, model_state)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255
    traced, difference = trace_model(model, image)
    if has_group_norm(model) and GN_SCRIPT_OP not in str(traced.inlined_graph):
        raise ExportError(f"the traced graph does not call {GN_SCRIPT_OP}")
    if difference > tolerance:
        raise ExportError(f"traced outputs differ from eager ones by {difference:.3g} (tolerance {tolerance})")
    traced.save(destination)
    return difference


def write_features_onnx(cfg, model_state, destination: str, size: Tuple[int, int], tolerance: float):
    """Writes ``features.onnx`` after its checks (:mod:`onnx_check`) on a batch of
    2 images of ``size`` and one image 32 pixels larger each way; returns (the largest
    absolute difference from the eager feature maps, the graph's summary)."""
    extractor = FeatureExtractor(build_loaded_model(cfg, model_state))
    generator = torch.Generator().manual_seed(0)
    height, width = size
    example = torch.rand(2, 3, height, width, generator=generator) * 255
    other = torch.rand(1, 3, height + 32, width + 32, generator=generator) * 255
    names = extractor.feature_names
    with torch.no_grad():
        with counting_group_norm_calls(extractor) as calls:
            samples = [(example, as_arrays(names, extractor(example)))]
        samples.append((other, as_arrays(names, extractor(other))))
    data = export_features_onnx(extractor, example)
    name = os.path.basename(destination)
    summary = check_graph(data, name, calls)
    session = cpu_session(data)
    difference = 0.0
    for images, eager in samples:
        difference = max(difference, compare_outputs(name, run_session(session, [images]), eager, tolerance))
    with open(destination, "wb") as f:
        f.write(data)
    return difference, summary


def write_model_onnx(cfg, model_state, destination: str, size: Tuple[int, int], tolerance: float):
    """Writes ``model.onnx`` (the whole model, traced on an image of ``size``) after
    its checks on that image and one of another size (not a multiple of 32): the
    same detections (count, classes; paired by box, as near-equal scores may swap
    places), boxes, masks and scores within ``tolerance``; returns (the largest
    absolute difference, the graph's summary)."""
    model = build_loaded_model(cfg, model_state)
    generator = torch.Generator().manual_seed(0)
    height, width = size
    image = torch.rand(3, height, width, generator=generator) * 255
    adapter = detection_adapter(model, image)
    with counting_group_norm_calls(model) as calls:
        traced_outputs = adapter(image)
    data, names = export_model_onnx(adapter)
    name = os.path.basename(destination)
    summary = check_graph(data, name, calls)
    session = cpu_session(data)
    difference = 0.0
    other = torch.rand(3, height + 20, width + 44, generator=generator) * 255
    for sample, outputs in ((image, traced_outputs), (other, adapter(other))):
        eager = as_arrays(names, outputs)
        ours = pair_detections(name, run_session(session, [sample]), eager, tolerance)
        difference = max(difference, compare_outputs(name, ours, eager, tolerance))
    with open(destination, "wb") as f:
        f.write(data)
    return difference, summary


def export_run(
    run_dir: str,
    output_dir: Optional[str] = None,
    config_file: Optional[str] = None,
    weights: Optional[str] = None,
    check_size: Sequence[int] = (256, 352),
    tolerance: float = 1e-4,
    torch_export: bool = True,
    trace: bool = True,
    onnx: bool = True,
    onnx_tolerance: float = ONNX_TOLERANCE,
    printer=print,
) -> Dict[str, str]:
    """Writes RUN_DIR/export/ (or ``output_dir``) from RUN_DIR/config.yaml and
    RUN_DIR/model_final.pth (or ``config_file``, ``weights``); returns {file name: path}.
    ``tolerance`` bounds the torch.export and TorchScript checks (max |exported -
    eager| / (1 + max |eager|)), ``onnx_tolerance`` the ONNX Runtime checks (max
    absolute difference of feature maps, boxes in pixels, mask probabilities and
    scores). Raises ``CheckpointError`` for an unreadable checkpoint and
    ``ExportError`` when an export does not reproduce the eager model."""
    config_file = config_file or os.path.join(run_dir, "config.yaml")
    weights = weights or os.path.join(run_dir, "model_final.pth")
    output_dir = output_dir or os.path.join(run_dir, "export")
    cfg, model_state = load_run(config_file, weights)
    os.makedirs(output_dir, exist_ok=True)
    author = f"gn_detection export_checkpoint from {weights}"
    written = {name: os.path.join(output_dir, name) for name in ("backbone.pkl", "model_slim.pth", "config.yaml")}

    backbone = backbone_weights(model_state)
    save_detectron2_pickle(written["backbone.pkl"], backbone, author)
    printer(f"backbone.pkl: {len(backbone)} tensors")
    save_slim_checkpoint(written["model_slim.pth"], model_state, author)
    printer(f"model_slim.pth: {len(model_state)} tensors")
    shutil.copyfile(config_file, written["config.yaml"])
    size = tuple(check_size)
    if torch_export:
        destination = os.path.join(output_dir, "features.pt2")
        difference = write_features_export(cfg, model_state, destination, size, tolerance)
        written["features.pt2"] = destination
        printer(f"features.pt2: backbone+FPN feature extractor, exported vs eager difference {difference:.3g}")
    if trace:
        destination = os.path.join(output_dir, "model_traced.ts")
        difference = write_traced_model(cfg, model_state, destination, size, tolerance)
        written["model_traced.ts"] = destination
        printer(f"model_traced.ts: whole model (TorchScript), traced vs eager difference {difference:.3g}")
    if onnx:
        parts = (("features.onnx", "backbone+FPN feature extractor", write_features_onnx),
                 ("model.onnx", "whole model", write_model_onnx))  # fmt: skip
        for file_name, part, write in parts:
            destination = os.path.join(output_dir, file_name)
            difference, summary = write(cfg, model_state, destination, size, onnx_tolerance)
            written[file_name] = destination
            printer(f"{file_name}: {part} (ONNX opset {summary.opset}, {summary.group_norm_nodes} GroupNormalization "
                    f"nodes), ONNX Runtime vs eager max absolute difference {difference:.3g}")  # fmt: skip
    return written
