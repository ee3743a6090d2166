"""Checks of an exported ONNX file before it is written: ``onnx.checker`` with
full shape inference, one ``GroupNormalization`` node per GroupNorm layer call
(no decomposition left), and ONNX Runtime (CPU execution provider) against the
eager model, output by output."""

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from gn_detection.checkpoint.export import ExportError
from gn_detection.layers import GroupNorm

# Ops that the exporter's own GroupNorm translation is made of; none may remain.
DECOMPOSITION_OPS = ("InstanceNormalization",)


@dataclass(frozen=True)
class GraphSummary:
    """What an exported graph contains."""

    opset: int
    op_counts: Dict[str, int]
    group_norm_nodes: int
    group_norm_then_relu: int  # GroupNormalization nodes whose one consumer is a Relu


@dataclass
class GroupNormCalls:
    """GroupNorm layer calls in one forward pass: each is one node of a traced
    graph (a layer called twice, as the res5 head of C4 models for boxes and for
    masks, is two nodes)."""

    total: int = 0
    fused_relu: int = 0  # calls of gn_detection layers that apply their ReLU themselves


@contextlib.contextmanager
def counting_group_norm_calls(module: nn.Module):
    """Counts, within the block, the calls of ``module``'s GroupNorm layers
    (``nn.GroupNorm`` and gn_detection's, of GN, LN and IN configs)."""
    calls = GroupNormCalls()

    def count(layer, inputs, output):
        calls.total += 1
        calls.fused_relu += isinstance(layer, GroupNorm) and layer.activation == "relu"

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.GroupNorm)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _graphs(graph: onnx.GraphProto):
    """``graph`` and the subgraphs of its control-flow nodes (If, Loop), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _graphs(subgraph)


def summarize(model: onnx.ModelProto) -> GraphSummary:
    """Opset of the default domain, op counts, and GroupNormalization nodes (alone and
    followed by Relu), over the graph and its subgraphs."""
    counts, then_relu = Counter(), 0
    for graph in _graphs(model.graph):
        nodes = graph.node
        counts.update(node.op_type for node in nodes)
        consumers = Counter(name for node in nodes for name in node.input)
        relu_inputs = {node.input[0] for node in nodes if node.op_type == "Relu"}
        then_relu += sum(
            consumers[node.output[0]] == 1 and node.output[0] in relu_inputs
            for node in nodes
            if node.op_type == "GroupNormalization"
        )
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    return GraphSummary(opset, dict(counts), counts["GroupNormalization"], then_relu)


def check_graph(data: bytes, file_name: str, calls: GroupNormCalls) -> GraphSummary:
    """``onnx.checker`` (full check) of the file's bytes, then one GroupNormalization
    node per GroupNorm layer call of the eager model, no decomposition left, and a
    Relu right after the node of each call that fuses its ReLU."""
    model = onnx.load_from_string(data)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"{file_name}: onnx.checker rejects the exported graph: {error}") from None
    summary = summarize(model)
    leftovers = {op: summary.op_counts[op] for op in DECOMPOSITION_OPS if op in summary.op_counts}
    if summary.group_norm_nodes != calls.total or leftovers:
        raise ExportError(
            f"{file_name}: {summary.group_norm_nodes} GroupNormalization nodes for {calls.total} GroupNorm layer calls"
            + (f", and a decomposition is left: {leftovers}" if leftovers else "")
        )
    if summary.group_norm_then_relu < calls.fused_relu:
        raise ExportError(
            f"{file_name}: {calls.fused_relu} GroupNorm layer calls fuse a ReLU but only "
            f"{summary.group_norm_then_relu} GroupNormalization nodes are followed by a Relu"
        )
    return summary


def cpu_session(data: bytes) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of the file's bytes on the CPU execution provider."""
    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])


def run_session(session: onnxruntime.InferenceSession, inputs: Sequence[torch.Tensor]) -> Dict[str, np.ndarray]:
    """{output name: array} of the session for ``inputs``, in the order of the graph inputs."""
    feed = {meta.name: tensor.numpy() for meta, tensor in zip(session.get_inputs(), inputs)}
    return dict(zip([meta.name for meta in session.get_outputs()], session.run(None, feed)))


def as_arrays(names: Sequence[str], tensors: Sequence[torch.Tensor]) -> Dict[str, np.ndarray]:
    """{name: numpy array} of an eager model's outputs."""
    return {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, tensors)}


def compare_outputs(file_name: str, ours: Dict[str, np.ndarray], eager: Dict[str, np.ndarray], tolerance: float):
    """Max |ONNX Runtime - eager| over the eager outputs; an ExportError naming the
    output when its shape differs, an integer output (classes, image size)
    differs at all, or a float output by more than ``tolerance``."""
    largest = 0.0
    for name, expected in eager.items():
        actual = ours[name]
        if actual.shape != expected.shape:
            raise ExportError(
                f"{file_name}: output {name} has shape {list(actual.shape)} in ONNX Runtime, "
                f"{list(expected.shape)} in the eager model"
            )
        if not actual.size:
            continue
        difference = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
        limit = tolerance if np.issubdtype(expected.dtype, np.floating) else 0.0
        if difference > limit:
            raise ExportError(
                f"{file_name}: output {name} differs from the eager model's by {difference:.3g} (tolerance {limit:g})"
            )
        largest = max(largest, difference)
    return largest


def pair_detections(file_name: str, ours: Dict[str, np.ndarray], eager: Dict[str, np.ndarray], tolerance: float):
    """``ours`` (ONNX Runtime's detections, output name -> array) reordered to pair
    with the eager detections: each eager detection, in turn, takes the unpaired
    one of the same class whose box is nearest. Detections whose scores differ by
    rounding alone may come out in either order; a count that differs, or an eager
    detection with no box of its class within ``tolerance``, is an ExportError."""
    boxes, classes = ours["pred_boxes"], ours["pred_classes"]
    if len(boxes) != len(eager["pred_boxes"]):
        raise ExportError(
            f"{file_name}: ONNX Runtime finds {len(boxes)} detections, the eager model {len(eager['pred_boxes'])}"
        )
    free = np.ones(len(boxes), dtype=bool)
    order = []
    for box, label in zip(eager["pred_boxes"], eager["pred_classes"]):
        distance = np.where(free & (classes == label), np.abs(boxes - box).max(axis=1), np.inf)
        best = int(np.argmin(distance)) if len(distance) else -1
        if best < 0 or distance[best] > tolerance:
            raise ExportError(
                f"{file_name}: the eager detection of class {label} at box {box.round(2).tolist()} has no ONNX "
                f"Runtime detection of that class within {tolerance:g} pixels"
            )
        free[best] = False
        order.append(best)
    return {name: (value[order] if name != "image_size" else value) for name, value in ours.items()}
