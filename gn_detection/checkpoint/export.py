"""Building blocks of the export of a finished training run (:mod:`export_run` writes the files).

- :func:`backbone_weights`: the weights of ``model.backbone`` (ResNet, plus FPN
  for FPN models; plus the res5 RoI head for C4 models, where res5 is not in
  ``model.backbone``), under the model's own names, for ``MODEL.WEIGHTS`` of a
  fine-tuning config with the same backbone.
- :func:`save_slim_checkpoint`: the model weights alone, without the optimizer,
  scheduler and iteration that ``DefaultTrainer`` checkpoints carry.
- :class:`FeatureExtractor` / :func:`export_features`: ``torch.export`` of the
  feature extractor (pixel normalization + backbone + FPN). The whole
  ``GeneralizedRCNN`` does not ``torch.export``: its RPN and RoI heads branch on
  data-dependent sizes (proposal filtering, NMS).
- :func:`trace_model`: the whole model in inference, image in, detections out,
  as TorchScript through detectron2's ``TracingAdapter`` (tracing records the
  data-dependent parts as the ops that computed them).
"""

import warnings
import json
from typing import Dict, Tuple

from detectron2.export import TracingAdapter

import torch
from torch import nn

from gn_detection.checkpoint.model_keys import backbone_prefixes, model_layout

MIN_BLOCKS = 3  # smallest exported image side, in multiples of size_divisibility


class ExportError(RuntimeError):
    """An exported file did not reproduce the eager model; nothing was written for it."""


def backbone_weights(model_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The backbone part of a GeneralizedRCNN state dict (see the module docstring)."""
    prefixes = backbone_prefixes(model_layout(list(model_state)))
    return {name: value for name, value in model_state.items() if name.startswith(prefixes)}


def save_slim_checkpoint(path: str, model_state: Dict[str, torch.Tensor], author: str) -> None:
    """``torch.save({"model": weights, "__author__": author})``: loads with
    ``torch.load(weights_only=True)`` and as detectron2 ``MODEL.WEIGHTS``."""
    weights = {name: value.detach().cpu().clone() for name, value in model_state.items()}
    torch.save({"model": weights, "__author__": author}, path)


class FeatureExtractor(nn.Module):
    """Images (N, 3, H, W), float pixels in the model's input format (BGR 0-255
    for the GN configs), H and W multiples of ``size_divisibility`` -> the
    backbone's feature maps, as a tuple in the order of :attr:`feature_names`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), persistent=False)
        self.feature_names = list(self.backbone.output_shape())
        self.size_divisibility = max(self.backbone.size_divisibility, 1)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone((images - self.pixel_mean) / self.pixel_std)
        return tuple(features[name] for name in self.feature_names)


def export_features(extractor: FeatureExtractor, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``extractor`` (in eval mode, no grad) with the batch size
    and the image size (in multiples of ``size_divisibility``) left dynamic.
    Images need at least :data:`MIN_BLOCKS` blocks per side (P6 of
    size 1 would be a special case to trace), and ``example`` at least 2 images."""
    step = extractor.size_divisibility
    n, _, h, w = example.shape
    if n < 2 or h % step or w % step or h < MIN_BLOCKS * step or w < MIN_BLOCKS * step:
        raise ValueError(
            f"export example must be (N>=2, 3, H, W) with H and W multiples of {step}, at least {MIN_BLOCKS * step}; "
            f"got {tuple(example.shape)}"
        )
    height = torch.export.Dim("height_blocks", min=MIN_BLOCKS, max=4096 // step)
    width = torch.export.Dim("width_blocks", min=MIN_BLOCKS, max=4096 // step)
    batch = torch.export.Dim("batch", min=1, max=256)
    dynamic = {"images": {0: batch, 2: step * height, 3: step * width}}
    extractor.eval()
    with torch.no_grad():
        return torch.export.export(extractor, (example,), dynamic_shapes=dynamic)


def max_relative_difference(exported: torch.export.ExportedProgram, extractor: FeatureExtractor, images) -> float:
    """max |exported - eager| / (1 + max |eager|) over all feature maps for ``images``."""
    with torch.no_grad():
        eager = extractor(images)
        ours = exported.module()(images)
    return max(((a - b).abs().max() / (1 + a.abs().max())).item() for a, b in zip(eager, ours))


def exported_op_names(exported: torch.export.ExportedProgram) -> set:
    """The operator names called in the exported graph."""
    return {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}


def export_metadata(extractor: FeatureExtractor) -> str:
    """JSON stored beside the exported program: input format and output names."""
    return json.dumps(
        {
            "inputs": "images: float (N, 3, H, W), model pixel format, H and W multiples of size_divisibility, "
            f"at least {MIN_BLOCKS} of them",
            "size_divisibility": extractor.size_divisibility,
            "pixel_mean": extractor.pixel_mean.flatten().tolist(),
            "pixel_std": extractor.pixel_std.flatten().tolist(),
            "outputs": extractor.feature_names,
            "needs": "import gn_detection (registers torch.ops.gn_detection.group_norm_forward) before torch.export.load",
        }
    )


def trace_model(model: nn.Module, image: torch.Tensor) -> Tuple[torch.jit.ScriptModule, float]:
    """TorchScript trace of ``model`` (a GeneralizedRCNN, put in eval mode) on one
    image (3, H, W) in the model's pixel format. Its outputs are the flattened
    detections (boxes, classes, masks, scores, image size); returns the trace and
    its largest difference from the eager model on ``image``."""
    model.eval()
    # Tracing warns at every Python branch on a tensor in detectron2's code; the
    # comparison with the eager outputs below is the check that matters.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        adapter = TracingAdapter(model, [{"image": image}])
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
        eager = adapter(*adapter.flattened_inputs)
        outputs = traced(*adapter.flattened_inputs)
    if [tuple(t.shape) for t in outputs] != [tuple(t.shape) for t in eager]:
        raise RuntimeError("the traced model's outputs differ in shape from the eager model's")
    difference = max(
        ((a.double() - b.double()).abs().max().item() for a, b in zip(outputs, eager) if a.numel()), default=0.0
    )
    return traced, difference
