"""Converting a Detectron (Caffe2) GN pickle into a detectron2 pickle: the
logic behind tools/convert_detectron_gn.py (names: :mod:`detectron_names`)."""

import os
from typing import Optional

from gn_detection.checkpoint.detectron_names import Conversion, convert_blobs, detectron_blobs
from gn_detection.checkpoint.model_keys import check_keys, model_layout, model_state_of, resnet_prefixes
from gn_detection.checkpoint.safe_load import load_pickle, save_detectron2_pickle


class ConversionError(RuntimeError):
    """The input cannot be converted as asked (unmapped blobs, keys the model does not match)."""


def convert_detectron_file(
    source: str, destination: str, cfg=None, layout: Optional[str] = None, ignore_unmapped: bool = False
) -> Conversion:
    """Converts ``source`` and writes ``destination``.

    The ResNet is placed for ``layout`` ("fpn"/"c4"); with ``cfg`` the layout is
    the config's model's and the result is checked against that model: no
    unexpected keys, equal shapes, and no missing keys (for a backbone-only
    source such as R-50-GN.pkl: none missing in the ResNet). Unmapped blobs raise
    :class:`ConversionError` unless ``ignore_unmapped``.
    """
    model_state = model_state_of(cfg) if cfg is not None else None
    if model_state is not None:
        config_layout = model_layout(list(model_state))
        if layout is not None and layout != config_layout:
            raise ConversionError(f"layout {layout!r} contradicts the config's model, which is {config_layout!r}")
        layout = config_layout
    layout = layout or "fpn"

    conversion = convert_blobs(detectron_blobs(load_pickle(source), source), layout)
    if conversion.unmapped and not ignore_unmapped:
        raise ConversionError(
            f"{source}: {len(conversion.unmapped)} blobs have no detectron2 name: "
            + ", ".join(conversion.unmapped)
            + " (pass --ignore-unmapped to leave them out)"
        )
    if not conversion.state:
        raise ConversionError(f"{source}: no Detectron GN blob found")
    if model_state is not None:
        resnet = resnet_prefixes(layout)
        backbone_only = all(name.startswith(resnet) for name in conversion.state)
        check = check_keys(conversion.state, model_state, required=resnet if backbone_only else None)
        if not check.ok:
            raise ConversionError(f"{source}: the converted weights do not fit the config's model:\n{check.describe()}")
    author = f"gn_detection convert_detectron_gn from {os.path.basename(source)}"
    save_detectron2_pickle(destination, conversion.state, author)
    return conversion
