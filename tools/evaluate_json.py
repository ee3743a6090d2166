#!/usr/bin/env python
"""Scores a saved COCO results file (the ``coco_instances_results.json`` that
``tools/train_net.py`` writes, or any COCO-format detections) against COCO
annotations, and prints the 12 standard COCOeval numbers.

    python tools/evaluate_json.py --gt ANNOTATIONS.json --results RESULTS.json --type bbox|segm [--json OUT]

The default backend is faster-coco-eval (C++ evaluate/accumulate), which gives
the same numbers as the official pycocotools; ``--backend pycocotools`` uses the
official one.
"""

import argparse
import contextlib
import io
import json
import sys

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("faster-coco-eval", "pycocotools")
IOU_TYPES = ("bbox", "segm")


def _coco_api(backend: str):
    """(COCO, COCOeval) classes of ``backend``."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def evaluate(gt_path: str, results_path: str, iou_type: str, backend: str = "faster-coco-eval") -> dict:
    """The 12 COCOeval summary numbers (default parameters) as {name: value}."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"--type must be one of {IOU_TYPES}, got {iou_type!r}")
    coco, coco_eval = _coco_api(backend)
    with open(results_path) as f:
        results = json.load(f)
    if not isinstance(results, list) or not results:
        raise ValueError(f"{results_path} holds no detections (expected a non-empty JSON list)")
    with contextlib.redirect_stdout(io.StringIO()):  # both APIs print progress to stdout
        ground_truth = coco(gt_path)
        detections = ground_truth.loadRes(results)
        evaluator = coco_eval(ground_truth, detections, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(value) for value in evaluator.stats[: len(STAT_NAMES)])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="COCO annotations JSON")
    parser.add_argument("--results", required=True, help="COCO results JSON (a list of detections)")
    parser.add_argument("--type", required=True, choices=IOU_TYPES, help="what to score")
    parser.add_argument("--backend", default="faster-coco-eval", choices=BACKENDS)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)

    stats = evaluate(args.gt, args.results, args.type, args.backend)
    print(f"COCO {args.type} ({args.backend}):")
    for name, value in stats.items():
        print(f"  {name:>6s} {value:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"type": args.type, "backend": args.backend, "stats": stats}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
