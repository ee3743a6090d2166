"""ONNX export of GN detectors in which every GroupNorm layer is ONNX's own
``GroupNormalization`` operator (opset 21: per-channel scale and bias, as
GroupNorm has), followed by one ``Relu`` where the layer fuses its ReLU.

Which exporter, and why: ``torch.onnx.export(..., dynamo=False)``, the
TorchScript-based exporter, with ``torch.onnx.register_custom_op_symbolic``
translations of the GN op and of ``aten::group_norm`` (``nn.GroupNorm``).
The ``torch.export``-based exporter (``dynamo=True`` with a custom translation
table) cannot take the whole Mask R-CNN: ``torch.export`` stops at the RPN's
branch on data (``if not valid_mask.all()`` in detectron2's
``find_top_rpn_proposals``), and a traced TorchScript module is no way
around that: the exporter asks for it to be converted with ``TS2EPConverter``
first, which fails on the ``prim::If`` nodes that scripted functions put in the
trace (detectron2's RoI pooler and torchvision's batched NMS have them).
The TorchScript exporter traces through detectron2's ``TracingAdapter``, as
the ``model_traced.ts`` export does, so one translation serves the feature
extractor and the whole model. Its symbolic functions go up to opset 20; at
opset 21 it warns and uses them unchanged. That is sound here: of the ops it
emits, those whose definition changed in opset 21 (Cast, Constant, Reshape,
Shape, Squeeze, Unsqueeze, Transpose, If, Pad, Flatten, ...) kept their inputs,
outputs and attributes and only gained 4-bit and 8-bit float types
(``tests/test_onnx_export.py`` checks this against ONNX's schemas), and each
exported file is checked with ``onnx.checker`` (full shape inference) and
against the eager model in ONNX Runtime before it is written
(:mod:`gn_detection.checkpoint.onnx_check`).

Empty batches: ``GroupNormalization`` is defined by a function body that
reshapes its input to (N, groups, -1), which no runtime can do for N = 0 (ONNX
Runtime and ONNX's reference evaluator both fail). The RoI heads run on a batch
of RoIs that is empty for an image without detections, so in ``model.onnx``
they run on one extra all-zero RoI, dropped after (:func:`roi_batches_never_empty`);
GroupNorm treats each RoI alone, so the other RoIs' results are unchanged.

The exporter's own ``aten::group_norm`` translation reshapes to
``InstanceNormalization`` and back; the one registered here replaces it at
opset 21 for any model exported in this process, which is the same operator
with fewer nodes.
"""

import contextlib
import io
import warnings
from typing import Callable, List, Tuple

import torch
from detectron2.export import TracingAdapter
from torch import nn
from torch.onnx import symbolic_helper

from gn_detection.checkpoint.export import FeatureExtractor

OPSET = 21
GN_SCHEMA = "gn_detection::group_norm_forward"


def _per_channel(g, tensor, input, value: float):
    """``tensor``, or ``value`` for every channel of ``input`` for a layer without
    affine parameters (GroupNormalization-21 requires scale and bias)."""
    if not symbolic_helper._is_none(tensor):
        return tensor
    channels = g.op("Shape", input, start_i=1, end_i=2)
    return g.op("Expand", g.op("CastLike", g.op("Constant", value_t=torch.tensor([value])), input), channels)


def _group_normalization(g, input, weight, bias, num_groups: int, eps: float):
    scale = _per_channel(g, weight, input, 1.0)
    shift = _per_channel(g, bias, input, 0.0)
    return g.op("GroupNormalization", input, scale, shift, num_groups_i=num_groups, epsilon_f=eps)


@symbolic_helper.parse_args("v", "v", "v", "i", "f", "b")
def _gn_detection_group_norm(g, input, weight, bias, num_groups, eps, relu):
    """``gn_detection::group_norm_forward`` -> GroupNormalization (+ Relu). The op's
    other outputs, the group statistics kept for the backward, are not exported."""
    if any(output.uses() for output in list(g.original_node.outputs())[1:]):
        raise torch.onnx.errors.SymbolicValueError(
            f"{GN_SCHEMA}: its mean and rstd outputs are used in the graph; the ONNX export covers "
            "inference, where only the normalized output is", input
        )
    output = _group_normalization(g, input, weight, bias, num_groups, eps)
    if relu:
        output = g.op("Relu", output)
    return output, None, None


@symbolic_helper.parse_args("v", "i", "v", "v", "f", "none")
def _aten_group_norm(g, input, num_groups, weight, bias, eps, cudnn_enabled):
    """``aten::group_norm`` (``nn.GroupNorm``, ``F.group_norm``) -> GroupNormalization."""
    return _group_normalization(g, input, weight, bias, num_groups, eps)


torch.onnx.register_custom_op_symbolic(GN_SCHEMA, _gn_detection_group_norm, OPSET)
torch.onnx.register_custom_op_symbolic("aten::group_norm", _aten_group_norm, OPSET)


def export_module_onnx(module: nn.Module, args: Tuple[torch.Tensor, ...], input_names, output_names, dynamic_axes) -> bytes:
    """``torch.onnx.export`` of ``module`` (put in eval mode) at :data:`OPSET`, as bytes."""
    module.eval()
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns at every Python branch on a tensor in detectron2's code;
        # the exporter at opset 21 (see the module docstring), about its own
        # deprecation, and about advanced indexing with negative indices (the
        # indices of detectron2's inference come from nonzero, arange and classes).
        # The checks of onnx_check are what tell whether the file is right.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Exporting to ONNX opset version 21", torch.onnx.errors.OnnxExporterWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator of advanced indexing", UserWarning)
        torch.onnx.export(
            module, args, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
            output_names=output_names, dynamic_axes=dynamic_axes,
        )  # fmt: skip
    return buffer.getvalue()


def export_features_onnx(extractor: FeatureExtractor, example: torch.Tensor) -> bytes:
    """ONNX of the feature extractor (pixel normalization + backbone + FPN):
    input ``images`` (N, 3, H, W) with batch, height and width dynamic, one
    output per feature map, named as :attr:`FeatureExtractor.feature_names`."""
    names = extractor.feature_names
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in names})
    return export_module_onnx(extractor, (example,), ["images"], names, dynamic)


def _inference_without_paste(model, inputs):
    """GeneralizedRCNN inference without detectron2's postprocessing: masks stay
    the mask head's (R, 1, M, M) probabilities, as detectron2's own deployment
    export (tools/deploy/export_model.py) leaves them. The postprocessing's mask
    pasting (``paste_masks_in_image``) does not convert: a scripted function whose
    two branches return uint8 (no detections) and bool masks, which ONNX's ``If``
    rejects."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _with_extra_roi(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` run on its RoI batch plus one all-zero RoI, that RoI's result dropped."""

    def padded(rois: torch.Tensor) -> torch.Tensor:
        return forward(torch.cat([rois, rois.new_zeros((1, *rois.shape[1:]))]))[:-1]

    return padded


@contextlib.contextmanager
def roi_batches_never_empty(model: nn.Module):
    """Within the block, the RoI heads of ``model`` that hold GroupNorm layers run
    on their RoIs plus one (see the module docstring): the box head and the mask
    head's layers of detectron2's ``StandardROIHeads``, and ``res5`` of its
    ``Res5ROIHeads`` (C4 models)."""
    heads = model.roi_heads
    targets = [(getattr(heads, "box_head", None), "forward"), (getattr(heads, "res5", None), "forward"),
               (getattr(heads, "mask_head", None), "layers")]  # fmt: skip
    patched = []
    try:
        for module, method in targets:
            if module is not None and any(isinstance(m, nn.GroupNorm) for m in module.modules()):
                setattr(module, method, _with_extra_roi(getattr(module, method)))
                patched.append((module, method))
        yield model
    finally:
        for module, method in patched:
            delattr(module, method)  # the class's method is in force again


def detection_adapter(model: nn.Module, image: torch.Tensor) -> TracingAdapter:
    """detectron2's ``TracingAdapter`` of ``model`` (a GeneralizedRCNN, put in
    eval mode) for one image (3, H, W) in the model's pixel format: image in,
    the detections' fields out as a flat tuple (see :func:`detection_output_names`)."""
    model.eval()
    return TracingAdapter(model, [{"image": image}], _inference_without_paste).eval()


def detection_output_names(adapter: TracingAdapter) -> List[str]:
    """Names of the adapter's outputs, known once it has been called: the fields of
    the detections in the order ``TracingAdapter`` flattens them (sorted:
    pred_boxes, pred_classes, pred_masks, scores for Mask R-CNN), then ``image_size``."""
    if adapter.outputs_schema is None:
        raise ValueError("call the adapter once before asking for its output names")
    instances = adapter.outputs_schema.schemas[0].schemas[0]  # [ {"instances": Instances} ]
    return [*instances.keys, "image_size"]


def export_model_onnx(adapter: TracingAdapter) -> Tuple[bytes, List[str]]:
    """ONNX of the whole model in inference, traced through ``adapter`` (from
    :func:`detection_adapter`, called once) on its image, with the image's height
    and width and the number of detections dynamic; returns (the file's bytes,
    its output names)."""
    names = detection_output_names(adapter)
    dynamic = {"image": {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in names if name != "image_size"})
    with roi_batches_never_empty(adapter.model):
        data = export_module_onnx(adapter, adapter.flattened_inputs, ["image"], names, dynamic)
    return data, names
