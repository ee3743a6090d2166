#!/usr/bin/env python
"""Makes shareable files from a training run of tools/train_net.py.

    python tools/export_checkpoint.py OUTPUT_DIR [--output-dir OUTPUT_DIR/export]

reads OUTPUT_DIR/config.yaml and OUTPUT_DIR/model_final.pth (or --config-file,
--weights) and writes:

- backbone.pkl: the backbone weights alone (ResNet + FPN of FPN models; ResNet
  + res5 head of C4 models), detectron2 pickle format, the model's own names:
  MODEL.WEIGHTS of a fine-tuning config with the same backbone (its heads start
  from scratch, e.g. for another NUM_CLASSES).
- model_slim.pth: all model weights, without optimizer, scheduler and
  iteration: MODEL.WEIGHTS for evaluation or fine-tuning.
- features.pt2: torch.export of the FEATURE EXTRACTOR ONLY (pixel normalization
  + backbone + FPN; not the whole Mask R-CNN: the RPN and RoI heads depend on
  data-dependent sizes that torch.export cannot trace). Input: float images
  (N, 3, H, W) in the model's pixel format, H and W multiples of 32 (at least
  96); output: the feature maps (e.g. p2..p6). GroupNorm appears as the
  registered op torch.ops.gn_detection.group_norm_forward, so
  `import gn_detection` before torch.export.load. The export is checked against
  eager outputs on random images; --skip-torch-export leaves it out.
- model_traced.ts: the whole model in inference as TorchScript (traced with
  detectron2's TracingAdapter): a (3, H, W) image in the model's pixel format
  -> boxes, classes, masks, scores and image size. GroupNorm appears as
  gn_detection::group_norm_forward (`import gn_detection` before
  torch.jit.load). Checked against eager outputs on the traced image;
  --skip-trace leaves it out.
- config.yaml: the run's config.
"""

import argparse
import os
import shutil
import sys

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import gn_detection
from gn_detection.checkpoint.export import (
    FeatureExtractor,
    backbone_weights,
    export_features,
    export_metadata,
    exported_op_names,
    max_relative_difference,
    save_slim_checkpoint,
    trace_model,
)
from gn_detection.checkpoint.safe_load import CheckpointError, load_torch, save_detectron2_pickle

GN_OP = "gn_detection.group_norm_forward.default"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="OUTPUT_DIR of a training run")
    parser.add_argument("--config-file", help="default: RUN_DIR/config.yaml")
    parser.add_argument("--weights", help="default: RUN_DIR/model_final.pth")
    parser.add_argument("--output-dir", help="default: RUN_DIR/export")
    parser.add_argument("--check-size", type=int, nargs=2, default=(256, 352), metavar=("H", "W"),
                        help="image size of the export check (multiples of 32, at least 96)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |exported - eager| / (1 + max |eager|)")
    parser.add_argument("--skip-torch-export", action="store_true")
    parser.add_argument("--skip-trace", action="store_true")
    return parser.parse_args(argv)  # fmt: skip


def load_run(config_file: str, weights: str):
    cfg = gn_detection.add_gn_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    data = load_torch(weights)
    if not isinstance(data, dict):
        raise CheckpointError(f"{weights}: expected a dict, got {type(data).__name__}")
    return cfg, data.get("model", data)


def export_inference(cfg, model_state, destination: str, size, tolerance: float) -> float:
    """Writes the torch.export of the feature extractor; returns the checked difference."""
    model = build_model(cfg)
    model.load_state_dict(model_state)
    extractor = FeatureExtractor(model.eval())
    generator = torch.Generator().manual_seed(0)
    height, width = size
    example = torch.rand(2, 3, height, width, generator=generator) * 255
    exported = export_features(extractor, example)
    if GN_OP not in exported_op_names(exported) and any(
        isinstance(m, gn_detection.GroupNorm) for m in model.backbone.modules()
    ):
        raise RuntimeError(f"the exported graph does not call {GN_OP}")
    check = torch.rand(1, 3, height + 32, width + 32, generator=generator) * 255
    difference = max(max_relative_difference(exported, extractor, images) for images in (example, check))
    if difference > tolerance:
        raise RuntimeError(f"exported features differ from eager ones by {difference:.3g} (tolerance {tolerance})")
    torch.export.save(exported, destination, extra_files={"gn_detection.json": export_metadata(extractor)})
    return difference


def trace_inference(cfg, model_state, destination: str, size, tolerance: float) -> float:
    """Writes the TorchScript trace of the whole model; returns the checked difference."""
    model = build_model(cfg)
    model.load_state_dict(model_state)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0)) * 255
    traced, difference = trace_model(model, image)
    if "gn_detection::group_norm_forward" not in str(traced.inlined_graph) and any(
        isinstance(m, gn_detection.GroupNorm) for m in model.modules()
    ):
        raise RuntimeError("the traced graph does not call gn_detection::group_norm_forward")
    if difference > tolerance:
        raise RuntimeError(f"traced outputs differ from eager ones by {difference:.3g} (tolerance {tolerance})")
    traced.save(destination)
    return difference


def main(argv=None) -> int:
    args = parse_args(argv)
    config_file = args.config_file or os.path.join(args.run_dir, "config.yaml")
    weights = args.weights or os.path.join(args.run_dir, "model_final.pth")
    output_dir = args.output_dir or os.path.join(args.run_dir, "export")
    try:
        cfg, model_state = load_run(config_file, weights)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    os.makedirs(output_dir, exist_ok=True)
    author = f"gn_detection export_checkpoint from {weights}"

    backbone = backbone_weights(model_state)
    save_detectron2_pickle(os.path.join(output_dir, "backbone.pkl"), backbone, author)
    print(f"backbone.pkl: {len(backbone)} tensors")
    save_slim_checkpoint(os.path.join(output_dir, "model_slim.pth"), model_state, author)
    print(f"model_slim.pth: {len(model_state)} tensors")
    shutil.copyfile(config_file, os.path.join(output_dir, "config.yaml"))
    if not args.skip_torch_export:
        difference = export_inference(
            cfg, model_state, os.path.join(output_dir, "features.pt2"), args.check_size, args.tolerance
        )
        print(f"features.pt2: backbone+FPN feature extractor, exported vs eager difference {difference:.3g}")
    if not args.skip_trace:
        difference = trace_inference(
            cfg, model_state, os.path.join(output_dir, "model_traced.ts"), args.check_size, args.tolerance
        )
        print(f"model_traced.ts: whole model (TorchScript), traced vs eager difference {difference:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
