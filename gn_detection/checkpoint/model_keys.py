"""Checks a detectron2 state dict against a model before anyone trains from it:
which model keys it leaves missing, which of its keys the model lacks, and
which shapes differ."""

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch


def model_layout(model_keys: Sequence[str]) -> str:
    """"fpn" when the ResNet sits under ``backbone.bottom_up`` (FPN models), else "c4"."""
    return "fpn" if any(key.startswith("backbone.bottom_up.") for key in model_keys) else "c4"


def resnet_prefixes(layout: str) -> Tuple[str, ...]:
    """Where the ResNet stem and stages of a model of ``layout`` live."""
    if layout == "fpn":
        return ("backbone.bottom_up.",)
    return ("backbone.", "roi_heads.res5.")


def backbone_prefixes(layout: str) -> Tuple[str, ...]:
    """The keys a pretrained backbone provides: all of ``model.backbone`` (the ResNet,
    and the FPN for FPN models), plus the res5 RoI head of C4 models."""
    return ("backbone.",) if layout == "fpn" else ("backbone.", "roi_heads.res5.")


@dataclass
class KeyCheck:
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    wrong_shapes: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shapes)

    def describe(self, limit: int = 20) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")
                lines.append(f"{len(items)} {title} keys: {shown}")
        for name, have, want in self.wrong_shapes[:limit]:
            lines.append(f"shape of {name}: checkpoint {have}, model {want}")
        return "\n".join(lines)


def check_keys(
    state: Mapping[str, object], model_state: Mapping[str, torch.Tensor], required: Optional[Sequence[str]] = None
) -> KeyCheck:
    """Compares ``state`` with ``model_state``; model keys count as missing only
    under the prefixes ``required`` (all of them when None)."""
    result = KeyCheck()
    for name, value in state.items():
        if name not in model_state:
            result.unexpected.append(name)
        elif tuple(np.shape(value)) != tuple(model_state[name].shape):
            result.wrong_shapes.append((name, tuple(np.shape(value)), tuple(model_state[name].shape)))
    for name in model_state:
        if name not in state and (required is None or name.startswith(tuple(required))):
            result.missing.append(name)
    return result


def model_state_of(cfg) -> Dict[str, torch.Tensor]:
    """The state dict of the model ``cfg`` builds (on the CPU, no weights loaded)."""
    from detectron2.modeling import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return build_model(cfg).state_dict()
