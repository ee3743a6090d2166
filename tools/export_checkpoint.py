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
- features.onnx: the feature extractor as ONNX (opset 21), like features.pt2:
  input "images" with dynamic batch (at least 1), height and width; one output
  per feature map. Every GroupNorm layer is one ONNX GroupNormalization node
  (followed by one Relu where the layer fuses its ReLU).
- model.onnx: the whole model in inference as ONNX (opset 21), traced with
  detectron2's TracingAdapter: input "image" (3, H, W) float in the model's
  pixel format, any H and W; outputs pred_boxes (R, 4), pred_classes (R,),
  pred_masks (R, 1, 28, 28) mask probabilities in each box (pasting them into
  the image is left to the caller, as in detectron2's own deployment export),
  scores (R,) and image_size. See docs/DEPLOYMENT.md.
  Both ONNX files pass onnx.checker and reproduce the eager model in ONNX
  Runtime (CPU) within --onnx-tolerance before they are written; --skip-onnx
  leaves them out.
- config.yaml: the run's config.
"""

import argparse
import sys

from gn_detection.checkpoint.export_run import ONNX_TOLERANCE, ExportError, export_run
from gn_detection.checkpoint.safe_load import CheckpointError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="OUTPUT_DIR of a training run")
    parser.add_argument("--config-file", help="default: RUN_DIR/config.yaml")
    parser.add_argument("--weights", help="default: RUN_DIR/model_final.pth")
    parser.add_argument("--output-dir", help="default: RUN_DIR/export")
    parser.add_argument("--check-size", type=int, nargs=2, default=(256, 352), metavar=("H", "W"),
                        help="image size of the export check (multiples of 32, at least 96)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |exported - eager| / (1 + max |eager|)")
    parser.add_argument("--onnx-tolerance", type=float, default=ONNX_TOLERANCE,
                        help="max absolute difference, ONNX Runtime vs eager (features, boxes in pixels, masks, scores)")
    parser.add_argument("--skip-torch-export", action="store_true")
    parser.add_argument("--skip-trace", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    return parser.parse_args(argv)  # fmt: skip


if __name__ == "__main__":
    args = parse_args()
    try:
        export_run(
            args.run_dir, args.output_dir, args.config_file, args.weights, args.check_size, args.tolerance,
            torch_export=not args.skip_torch_export, trace=not args.skip_trace, onnx=not args.skip_onnx,
            onnx_tolerance=args.onnx_tolerance,
        )  # fmt: skip
    except (CheckpointError, ExportError) as error:
        sys.exit(f"error: {error}")
