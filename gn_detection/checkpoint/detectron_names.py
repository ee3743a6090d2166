"""The names of Detectron's (Caffe2) GN models in detectron2, blob by blob.

Detectron stores a parameter as ``<layer>_<param>``: ``_w`` (conv/fc weight),
``_b`` (its bias), ``_gn_s``/``_gn_b`` (GroupNorm gamma/beta of the conv
``<layer>``). Each rule below matches a whole layer name and says exactly
which detectron2 module it is; there is no suffix matching, so a blob either
has one destination or is reported as unmapped.

Layers (R-50/R-101 ImageNet GN models and Detectron's GN Mask R-CNN models):

- ResNet: ``conv1`` (stem), ``res{2..5}_{i}_branch{1,2a,2b,2c}`` (block i's
  shortcut, conv1, conv2, conv3). ``pred`` (the ImageNet classifier) is dropped.
- FPN: ``fpn_inner_res{s}_{i}_sum`` (top level) and
  ``fpn_inner_res{s}_{i}_sum_lateral`` (lateral convs), ``fpn_res{s}_{i}_sum``
  (output convs), i being the last block of stage s.
- RPN: ``conv_rpn_fpn2``, ``rpn_cls_logits_fpn2``, ``rpn_bbox_pred_fpn2``
  (FPN: the level-2 convs, shared by all levels), or ``conv_rpn``,
  ``rpn_cls_logits``, ``rpn_bbox_pred`` (C4).
- Box head: ``head_conv{k}`` (4conv1fc), ``fc6``/``fc7``, predictors
  ``cls_score`` and ``bbox_pred``.
- Mask head: ``_mask_fcn{k}``, ``conv5_mask`` (the 2x deconv), ``mask_fcn_logits``.
- ``*_momentum`` blobs (SGD state) are ignored.

Detectron's predictors have a background class at index 0; detectron2's have
it last in ``cls_score`` and not at all in the box and mask regressors. As
detectron2 does for Detectron models: ``cls_score`` rows move from
[bg, c1..cK] to [c1..cK, bg]; ``bbox_pred`` loses its first 4 rows (the
background box); ``mask_fcn_logits`` loses its first row (a class-agnostic mask
predictor, one row, is kept as is). Weights keep their layout otherwise: both
frameworks store convs as (out, in, kh, kw), deconvs as (in, out, kh, kw), fcs
as (out, in) over C-major flattened features.

Where the ResNet goes depends on the model: :data:`LAYOUTS` gives the prefix of
the stem and stages for FPN models (``backbone.bottom_up.``) and C4 models
(``backbone.``, with res5 in the RoI head: ``roi_heads.``).
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

PARAMS = {"w": "weight", "b": "bias", "gn_s": "norm.weight", "gn_b": "norm.bias"}
_CONV_GN = ("w", "gn_s", "gn_b")
_CONV_BIAS = ("w", "b")
BRANCHES = {"branch1": "shortcut", "branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}
RPN_LAYERS = {"conv_rpn": "conv", "rpn_cls_logits": "objectness_logits", "rpn_bbox_pred": "anchor_deltas"}

# ResNet prefix per model layout: (stem..res4, res5)
LAYOUTS = {"fpn": ("backbone.bottom_up.", "backbone.bottom_up."), "c4": ("backbone.", "roi_heads.")}
DROPPED_LAYERS = ("pred",)  # the ImageNet classifier


def _background_last(array: np.ndarray) -> np.ndarray:
    return np.concatenate([array[1:], array[:1]])


def _drop_background_box(array: np.ndarray) -> np.ndarray:
    return array[4:]


def _drop_background_mask(array: np.ndarray) -> np.ndarray:
    return array if array.shape[0] == 1 else array[1:]


@dataclass(frozen=True)
class Rule:
    """Layers whose name fully matches ``pattern`` become ``target`` (a format
    string over the match groups and ``{resnet}``/``{res5}``, the layout prefixes),
    for the Detectron params in ``params``, values passed through ``transform``."""

    pattern: str
    target: str
    params: Tuple[str, ...]
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None


RULES = (
    Rule(r"conv1", "{resnet}stem.conv1", _CONV_GN),
    Rule(r"res(?P<stage>[234])_(?P<block>\d+)_(?P<branch>branch(?:1|2a|2b|2c))", "{resnet}res{stage}.{block}.{conv}",
         _CONV_GN),
    Rule(r"res5_(?P<block>\d+)_(?P<branch>branch(?:1|2a|2b|2c))", "{res5}res5.{block}.{conv}", _CONV_GN),
    Rule(r"fpn_inner_res(?P<stage>[2-5])_\d+_sum(?:_lateral)?", "backbone.fpn_lateral{stage}", _CONV_GN),
    Rule(r"fpn_res(?P<stage>[2-5])_\d+_sum", "backbone.fpn_output{stage}", _CONV_GN),
    Rule(r"(?P<rpn>conv_rpn|rpn_cls_logits|rpn_bbox_pred)(?:_fpn2)?", "proposal_generator.rpn_head.{rpn_module}",
         _CONV_BIAS),
    Rule(r"head_conv(?P<index>[1-9])", "roi_heads.box_head.conv{index}", _CONV_GN),
    Rule(r"fc6", "roi_heads.box_head.fc1", _CONV_BIAS),
    Rule(r"fc7", "roi_heads.box_head.fc2", _CONV_BIAS),
    Rule(r"cls_score", "roi_heads.box_predictor.cls_score", _CONV_BIAS, _background_last),
    Rule(r"bbox_pred", "roi_heads.box_predictor.bbox_pred", _CONV_BIAS, _drop_background_box),
    Rule(r"_mask_fcn(?P<index>[1-9])", "roi_heads.mask_head.mask_fcn{index}", _CONV_GN),
    Rule(r"conv5_mask", "roi_heads.mask_head.deconv", _CONV_BIAS),
    Rule(r"mask_fcn_logits", "roi_heads.mask_head.predictor", _CONV_BIAS, _drop_background_mask),
)  # fmt: skip

_BLOB = re.compile(r"(?P<layer>.+?)_(?P<param>gn_s|gn_b|w|b)")


def detectron2_name(blob: str, layout: str = "fpn") -> Optional[Tuple[str, Optional[Callable]]]:
    """(detectron2 name, value transform or None) of a Detectron blob, or None
    when no rule covers it (dropped and ignored blobs included)."""
    resnet, res5 = LAYOUTS[layout]
    match = _BLOB.fullmatch(blob)
    if match is None:
        return None
    layer, param = match["layer"], match["param"]
    for rule in RULES:
        found = re.fullmatch(rule.pattern, layer)
        if found is None:
            continue
        if param not in rule.params:
            return None
        groups = found.groupdict()
        fields = dict(groups, resnet=resnet, res5=res5)
        if "branch" in groups:
            fields["conv"] = BRANCHES[groups["branch"]]
        if "rpn" in groups:
            fields["rpn_module"] = RPN_LAYERS[groups["rpn"]]
        return f"{rule.target.format(**fields)}.{PARAMS[param]}", rule.transform
    return None


@dataclass
class Conversion:
    """The result of :func:`convert_blobs`: detectron2 ``state`` and what was left out."""

    state: Dict[str, np.ndarray] = field(default_factory=dict)
    sources: Dict[str, str] = field(default_factory=dict)  # detectron2 name -> Detectron blob
    dropped: List[str] = field(default_factory=list)  # known blobs with no detection counterpart
    ignored: List[str] = field(default_factory=list)  # momentum blobs and non-array entries
    unmapped: List[str] = field(default_factory=list)  # blobs no rule covers


def _is_dropped(blob: str) -> bool:
    match = _BLOB.fullmatch(blob)
    return match is not None and match["layer"] in DROPPED_LAYERS and match["param"] in ("w", "b")


def convert_blobs(blobs: Dict[str, object], layout: str = "fpn") -> Conversion:
    """Renames Detectron ``blobs`` ({name: array}) to detectron2 names for a
    model of ``layout`` ("fpn" or "c4"), reordering the predictors' classes."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    result = Conversion()
    for blob in sorted(blobs):
        value = blobs[blob]
        if blob.endswith("_momentum") or not isinstance(value, np.ndarray):
            result.ignored.append(blob)
            continue
        if _is_dropped(blob):
            result.dropped.append(blob)
            continue
        mapped = detectron2_name(blob, layout)
        if mapped is None:
            result.unmapped.append(blob)
            continue
        name, transform = mapped
        if name in result.state:
            raise ValueError(f"Detectron blobs '{result.sources[name]}' and '{blob}' both map to '{name}'")
        result.state[name] = np.ascontiguousarray(transform(value) if transform else value)
        result.sources[name] = blob
    return result


def detectron_blobs(data: object, filename: str) -> Dict[str, object]:
    """The blob dict of a loaded Detectron pickle: ``data["blobs"]`` for
    detection models, ``data`` itself for ImageNet models."""
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: expected a dict at the top of the pickle, got {type(data).__name__}")
    if "model" in data and "__author__" in data:
        raise ValueError(f"{filename}: already a detectron2 checkpoint (has 'model' and '__author__')")
    blobs = data.get("blobs", data)
    if not isinstance(blobs, dict):
        raise ValueError(f"{filename}: 'blobs' is a {type(blobs).__name__}, expected a dict")
    return blobs
