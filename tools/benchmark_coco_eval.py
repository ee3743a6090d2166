#!/usr/bin/env python
"""Times the training-time COCO evaluation with faster-coco-eval against
pycocotools on the COCO fixture replicated to a realistic size (default 50
copies: 5000 images, 36,700 detections per type), and prints the medians and
the median per-repetition ratio (gn_detection.evaluation.speed).

    python tools/benchmark_coco_eval.py [--fixture ../shared/data/coco_eval_fixture] [--copies 50] \\
        [--repeats 3] [--json OUT]
"""

import argparse
import json
import os

from gn_detection.evaluation.speed import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", default=os.path.join(REPO, "..", "shared", "data", "coco_eval_fixture"))
    parser.add_argument("--copies", type=int, default=50, help="copies of the fixture's 100 images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    report = benchmark(args.fixture, args.copies, args.repeats)
    print("\n| type | images | detections | pycocotools s | faster-coco-eval s | speed-up (median ratio) "
          "| max stat diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for iou_type, row in report.items():
        medians = row["median_seconds"]
        print(f"| {iou_type} | {row['images']} | {row['detections']} | {medians['pycocotools']:.2f} | "
              f"{medians['faster-coco-eval']:.2f} | {row['median_ratio']:.1f}x | {row['max_stat_difference']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copies": args.copies, "repeats": args.repeats, "results": report}, f, indent=1)
