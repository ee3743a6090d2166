#!/usr/bin/env python
"""Converts a Detectron (Caffe2) GN model pickle into a detectron2 pickle.

    python tools/convert_detectron_gn.py R-50-GN.pkl R-50-GN_d2.pkl \\
        --config-file configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml
    python tools/convert_detectron_gn.py mask_rcnn_R-50-FPN_2x_gn.pkl model_d2.pkl \\
        --config-file configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml

Inputs: Detectron's ImageNet GN models (R-50-GN.pkl, R-101-GN.pkl) and its GN
Mask R-CNN models. Every blob is renamed by an explicit table
(gn_detection/checkpoint/detectron_names.py); the predictors' background class
is moved (cls_score) or dropped (bbox_pred, mask_fcn_logits) as detectron2
expects. Momentum blobs are ignored, the ImageNet classifier (pred_w, pred_b)
is dropped. A blob with no detectron2 name fails the command unless
--ignore-unmapped. The pickle is read without executing anything in it.

With --config-file the ResNet is placed for that config's model (FPN or C4) and
the result is checked against it: no unexpected keys, equal shapes, nothing
missing (for an ImageNet model: nothing missing in the ResNet). Without it the
FPN layout is used unchecked (or --layout c4).

The output {'model': {name: array}, '__author__', 'matching_heuristics': False}
is loaded by exact names: use it as MODEL.WEIGHTS.
"""

import argparse
import sys

from detectron2.config import get_cfg

import gn_detection
from gn_detection.checkpoint.convert import ConversionError, convert_detectron_file
from gn_detection.checkpoint.safe_load import CheckpointError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="Detectron .pkl (a dict with 'blobs', or the blobs themselves)")
    parser.add_argument("output", help="detectron2 .pkl to write")
    parser.add_argument("--config-file", help="gn_detection config whose model the weights are for")
    parser.add_argument("--layout", choices=("fpn", "c4"), help="ResNet placement when no config is given")
    parser.add_argument("--ignore-unmapped", action="store_true", help="leave out blobs without a detectron2 name")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = None
    if args.config_file:
        cfg = gn_detection.add_gn_config(get_cfg())
        cfg.merge_from_file(args.config_file)
    try:
        conversion = convert_detectron_file(
            args.input, args.output, cfg=cfg, layout=args.layout, ignore_unmapped=args.ignore_unmapped
        )
    except (ConversionError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}: {len(conversion.state)} tensors")
    if conversion.dropped:
        print(f"dropped (no detection counterpart): {', '.join(conversion.dropped)}")
    if conversion.ignored:
        print(f"ignored {len(conversion.ignored)} momentum/non-array entries")
    if conversion.unmapped:
        print(f"left out {len(conversion.unmapped)} unmapped blobs: {', '.join(conversion.unmapped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
