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
import json

from gn_detection.evaluation import BACKENDS, IOU_TYPES, evaluate_results_file

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="COCO annotations JSON")
    parser.add_argument("--results", required=True, help="COCO results JSON (a list of detections)")
    parser.add_argument("--type", required=True, choices=IOU_TYPES, help="what to score")
    parser.add_argument("--backend", default="faster-coco-eval", choices=BACKENDS)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    stats = evaluate_results_file(args.gt, args.results, args.type, args.backend)
    print(f"COCO {args.type} ({args.backend}):")
    for name, value in stats.items():
        print(f"  {name:>6s} {value:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"type": args.type, "backend": args.backend, "stats": stats}, f, indent=1)
