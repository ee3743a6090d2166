"""``tools/predict.py``: a model's predictions on image files, folders, glob
patterns and videos, drawn into PNGs (and annotated videos), with one
COCO-format results file for all images."""

import argparse
import json
import os
import re
import sys
from typing import List, Optional, Sequence

import cv2
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from tqdm import tqdm

from gn_detection.checkpoint import CheckpointError
from gn_detection.data.coco_checked import DatasetError
from gn_detection.engine.datasets import add_dataset_argument, prepare_datasets
from gn_detection.engine.trainer import load_config
from gn_detection.predict.drawing import draw_predictions
from gn_detection.predict.inputs import collect_inputs
from gn_detection.predict.models import EagerPredictor, TracedPredictor
from gn_detection.predict.results import ImageIds, coco_results
from gn_detection.predict.video import VideoError, predict_video

RESULTS_FILE = "coco_results.json"
IMAGES_FILE = "images.json"
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # MODEL.WEIGHTS, INPUT.MIN_SIZE_TEST, ...

DESCRIPTION = """Runs a model on images (files, folders, glob patterns) and videos.

    python tools/predict.py --config-file CFG --input photos/ more/*.jpg [--output DIR] [--confidence 0.5] \\
        MODEL.WEIGHTS output/model_final.pth
    python tools/predict.py --config-file RUN/config.yaml --traced RUN/export/model_traced.ts --input photo.jpg
    python tools/predict.py --config-file CFG --dataset mine_val VAL.json VAL_IMAGES/ --input VAL_IMAGES/ \\
        DATASETS.TEST "('mine_val',)" MODEL.WEIGHTS W     # class names and image ids of mine_val

Writes into --output: one PNG per image with the detections of score >= --confidence
drawn (masks, boxes, class names and scores; class indices when the config's test
set is not registered), an annotated MP4 per video, coco_results.json (every
detection of every image, COCO results format, scored by tools/evaluate_json.py)
and images.json (the image id and file of each image). Images of the config's
registered test set keep their ids there. A missing or unreadable input is
reported and skipped; the command then exits with status 1. A missing or
unfitting checkpoint stops it before any image is read (status 2).
Trailing KEY VALUE pairs override the config (the device: MODEL.DEVICE).
"""


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders, glob patterns, videos")
    parser.add_argument("--output", default="predictions", help="folder for the pictures and results")
    parser.add_argument("--confidence", type=float, default=0.5, help="smallest score drawn (all go to the JSON)")
    parser.add_argument("--traced", metavar="MODEL_TRACED.ts", help="run this TorchScript export instead")
    add_dataset_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Arguments; ``KEY VALUE`` pairs written right after the ``--input`` paths
    (which argparse takes as more paths) are moved to the overrides."""
    args = argument_parser().parse_args(argv)
    for index, entry in enumerate(args.input):
        if CONFIG_KEY.match(entry):
            args.opts = args.input[index:] + args.opts
            args.input = args.input[:index]
            break
    if not args.input:
        argument_parser().error("--input needs at least one path")
    return args


def output_name(path: str, used: set, suffix: str) -> str:
    """``<file stem><suffix>``, numbered when two inputs share a stem."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, count = f"{stem}{suffix}", 1
    while name in used:
        count += 1
        name = f"{stem}_{count}{suffix}"
    used.add(name)
    return name


def run_images(images: List[str], predictor, cfg, metadata, args, used: set) -> List[str]:
    """Predicts, draws and collects results for ``images``; returns the ones that failed, with why."""
    image_ids = ImageIds(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    results, records, failed = [], [], []
    for path in tqdm(images, desc="predicting", unit="image"):
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except Exception as error:  # PIL raises several kinds for missing, truncated and non-image files
            failed.append(f"{path} ({type(error).__name__}: {error})")
            continue
        instances = predictor(image)
        image_id = image_ids(path)
        height, width = image.shape[:2]
        records.append({"id": image_id, "file_name": path, "height": height, "width": width})
        results.extend(coco_results(instances, image_id, metadata))
        drawn = draw_predictions(convert_image_to_rgb(image, cfg.INPUT.FORMAT),
                                 instances[instances.scores >= args.confidence], metadata)  # fmt: skip
        cv2.imwrite(os.path.join(args.output, output_name(path, used, ".png")), drawn[:, :, ::-1])
    if images:
        with open(os.path.join(args.output, RESULTS_FILE), "w") as f:
            json.dump(results, f)
        with open(os.path.join(args.output, IMAGES_FILE), "w") as f:
            json.dump(records, f, indent=1)
    return failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs ``tools/predict.py``; returns the exit status (0, 1: some inputs
    failed, 2: nothing could run)."""
    args = parse_args(argv)
    found = collect_inputs(args.input)
    if not found.images and not found.videos:
        print(f"error: no images or videos found in {', '.join(args.input)}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config_file, args.opts)
        prepare_datasets(cfg, args.dataset, args.opts, training=False)
        cfg.freeze()
        predictor = TracedPredictor(cfg, args.traced) if args.traced else EagerPredictor(cfg)
    except (CheckpointError, DatasetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else Metadata()
    os.makedirs(args.output, exist_ok=True)
    used = set()
    failed = run_images(found.images, predictor, cfg, metadata, args, used)
    for video in found.videos:
        try:
            predict_video(video, os.path.join(args.output, output_name(video, used, ".mp4")), predictor, metadata,
                          args.confidence, cfg.INPUT.FORMAT)  # fmt: skip
        except VideoError as error:
            failed.append(str(error))
    print(f"{len(found.images) + len(found.videos) - len(failed)} inputs predicted into {args.output}")
    failed += [f"{entry} (no such file, folder or matching pattern)" for entry in found.not_found]
    if failed:
        print(f"error: {len(failed)} inputs failed and were skipped:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0
