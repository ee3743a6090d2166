#!/usr/bin/env python
"""Inference time of ONNX Runtime against eager PyTorch on the CPU: R50-FPN Mask R-CNN
with (a) our GN op and (b) detectron2's GN (nn.GroupNorm), eager, and (c) ONNX Runtime
running the ONNX export of (a), side by side in one process on the same images.

    python tools/benchmark_onnx.py [--parts features,model] [--height 384 --width 512]
                                   [--reps 5] [--threads 2] [--allocator tuned|default] [--json FILE]

The models, settings and timing are gn_detection.benchmark.onnx_inference's: random
seeded weights, (c)'s and (b)'s outputs compared with (a)'s first, then repetitions
that call each variant once in rotated order; printed: median milliseconds and the
medians of per-repetition ratios to (a) and (b).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs from a checkout too
from gn_detection.benchmark import onnx_inference  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(onnx_inference.PARTS), help="features, model or both")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2, help="images per batch of the features part")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads and ONNX Runtime intra-op threads")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned", help="glibc malloc")
    parser.add_argument("--rois", type=int, default=512, help="ROI_HEADS.BATCH_SIZE_PER_IMAGE of the configs")
    parser.add_argument("--wait-idle", type=float, default=30.0, metavar="SECONDS",
                        help="before each timed call wait up to this long for a quiet machine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in args.parts if p not in onnx_inference.PARTS]
    if unknown or not args.parts:
        parser.error(f"--parts: choose from {list(onnx_inference.PARTS)}, got {args.parts}")
    if min(args.reps, args.batch, args.threads) < 1 or args.warmup < 0:
        parser.error("--reps, --batch and --threads must be at least 1, --warmup at least 0")
    return args  # fmt: skip


if __name__ == "__main__":
    args = parse_args()
    results = onnx_inference.run(
        args.parts, args.height, args.width, args.batch, args.reps, args.warmup, args.threads, args.allocator,
        args.rois, args.seed, args.wait_idle,
    )  # fmt: skip
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)
