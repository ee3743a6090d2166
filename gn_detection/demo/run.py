"""The main job: trains a GN Mask R-CNN from scratch on the CPU, on the built-in
shapes dataset, evaluates it with COCOEvaluator and draws what it learned
(``tools/demo.py`` is the command over :func:`main`)."""

import argparse
import json
import logging
import os
import shutil
import sys
import time

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from gn_detection import engine
from gn_detection.checkpoint.export_run import export_run
from gn_detection.data import DatasetError, ShapesSpec, ensure_shapes_dataset, register_shapes_dataset
from gn_detection.demo.pictures import draw_predictions
from gn_detection.demo.report import (
    comparison_table,
    final_metrics,
    plot_comparison,
    plot_training_curves,
    read_metrics,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DESCRIPTION = """Trains a GN Mask R-CNN from scratch on the CPU on the built-in shapes dataset.

    python tools/demo.py                      # what `make demo` runs
    python tools/demo.py --overwrite          # replace a previous output/demo
    python tools/demo.py --compare            # GN vs BN, 2 and 1 images per batch
    python tools/demo.py SOLVER.MAX_ITER 500  # trailing KEY VALUE pairs override the config

Steps: generate the dataset under --datasets-root unless it is there, register
it (gn_shapes_train/gn_shapes_val), train (val AP every TEST.EVAL_PERIOD
iterations), then write into --output-dir: detectron2's metrics.json and
checkpoint (model_final.pth), training_curves.png (losses and val AP),
predictions/*.png (predictions next to the ground truth on val images),
export/ (backbone.pkl, usable as MODEL.WEIGHTS, and the other exports of
tools/export_checkpoint.py) and summary.json (final AP and timings). An
existing, non-empty --output-dir is left untouched unless --overwrite is given.

With --compare, each of GN and BN (everywhere: ResNet, FPN, heads) trains from
scratch at 2 and at 1 images per batch, same data, same iterations, LR scaled
with the batch; the runs go to --output-dir/<norm>_batch<N>/ (default
output/demo_compare/) and compare.png, compare.json hold their val AP side by side.
"""

DEFAULT_CONFIG = os.path.join(REPO, "configs", "demo", "mask_rcnn_R_18_FPN_gn_scratch_shapes.yaml")
COMPARE_RUNS = (("GN", 2), ("BN", 2), ("GN", 1), ("BN", 1))
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")
SEGM_AP50_GOAL = 50.0


def parse_args(argv=None):
    """The demo's options (``tools/demo.py --help``)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output-dir", help="default: output/demo, or output/demo_compare with --compare")
    parser.add_argument("--datasets-root", default=os.path.join(REPO, "datasets", "gn_shapes"))
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    parser.add_argument("--compare", action="store_true", help="GN vs BN at 2 and 1 images per batch")
    parser.add_argument("--num-train", type=int, default=ShapesSpec.num_train)
    parser.add_argument("--num-val", type=int, default=ShapesSpec.num_val)
    parser.add_argument("--image-size", type=int, default=ShapesSpec.image_size)
    parser.add_argument("--seed", type=int, default=ShapesSpec.seed, help="dataset seed")
    parser.add_argument("--num-pictures", type=int, default=6, help="val images drawn into predictions/")
    parser.add_argument("--skip-export", action="store_true", help="no export/ folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs that override the config")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        args.output_dir = os.path.join(REPO, "output", "demo_compare" if args.compare else "demo")
    return args


def claim_output_dir(path: str, overwrite: bool) -> None:
    """Creates ``path``; a non-empty one is an error unless ``overwrite``, which empties it."""
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            raise FileExistsError(
                f"output directory {path} already holds a run; nothing was changed. Pass --overwrite "
                "(make demo DEMO_ARGS=--overwrite) to replace it, or --output-dir for another place"
            )
        shutil.rmtree(path)
    elif os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"output directory {path} is a file; nothing was changed")
    os.makedirs(path, exist_ok=True)


def prepare_dataset(args):
    """Generates (if absent), registers and checks the shapes dataset; returns its split names."""
    spec = ShapesSpec(num_train=args.num_train, num_val=args.num_val, image_size=args.image_size, seed=args.seed)
    root = ensure_shapes_dataset(args.datasets_root, spec)
    names = register_shapes_dataset(root)
    for name in names:
        print(f"{name}: {len(DatasetCatalog.get(name))} images checked")
    return names


def train(config_file: str, output_dir: str, opts) -> None:
    """One run of :func:`gn_detection.engine.main`: trains, evaluating on the config's test
    set every TEST.EVAL_PERIOD iterations and at the end (results go to metrics.json)."""
    # detectron2's setup_logger adds console and file handlers per output folder;
    # drop those of a previous run so that each run logs once, to its own log.txt.
    setup_logger.cache_clear()
    for name in ("detectron2", "fvcore"):
        for handler in list(logging.getLogger(name).handlers):
            logging.getLogger(name).removeHandler(handler)
            handler.close()
    arguments = engine.argument_parser().parse_args(["--config-file", config_file, "OUTPUT_DIR", output_dir, *opts])
    engine.main(arguments)


def export_demo_run(output_dir: str, image_size: int) -> None:
    """The run's export/ folder (backbone.pkl, model_slim.pth, features.pt2, model_traced.ts)."""
    side = max(96, -(-image_size // 32) * 32)
    export_run(output_dir, check_size=(side, side))


def run_demo(args, start: float) -> dict:
    """Trains and evaluates, then writes the curves, pictures, export and summary.json; returns the summary."""
    prepared = time.perf_counter()
    train(args.config_file, args.output_dir, args.opts)
    trained = time.perf_counter()
    metrics = read_metrics(os.path.join(args.output_dir, "metrics.json"))
    plot_training_curves(metrics, os.path.join(args.output_dir, "training_curves.png"))
    config_file = os.path.join(args.output_dir, "config.yaml")
    pictures = draw_predictions(
        config_file, os.path.join(args.output_dir, "model_final.pth"), os.path.join(args.output_dir, "predictions"),
        args.num_pictures,
    )  # fmt: skip
    if not args.skip_export:
        export_demo_run(args.output_dir, args.image_size)
    summary = {
        "final": final_metrics(metrics),
        "seconds": {
            "dataset": prepared - start,
            "train_and_eval": trained - prepared,
            "pictures_and_export": time.perf_counter() - trained,
            "total": time.perf_counter() - start,
        },
        "pictures": pictures,
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    segm_ap50 = summary["final"].get("segm/AP50", float("nan"))
    print(f"\nval AP after {summary['final'].get('iteration')} iterations: " + ", ".join(
        f"{key} {value:.1f}" for key, value in summary["final"].items() if key != "iteration"))  # fmt: skip
    verdict = "reached" if segm_ap50 >= SEGM_AP50_GOAL else "did NOT reach"
    print(f"segm AP50 {segm_ap50:.1f} {verdict} the demo's goal of {SEGM_AP50_GOAL:.0f}")
    seconds = summary["seconds"]
    print(f"took {seconds['total'] / 60:.1f} min (dataset {seconds['dataset']:.0f} s, training and evaluation "
          f"{seconds['train_and_eval']:.0f} s, pictures and export {seconds['pictures_and_export']:.0f} s); "
          f"outputs in {args.output_dir}")
    return summary


def run_comparison(args) -> None:
    """Trains COMPARE_RUNS into subfolders, then plots and tabulates their val AP."""
    runs = {}
    base = engine.load_config(args.config_file, args.opts)
    for norm, batch in COMPARE_RUNS:
        name = f"{norm.lower()}_batch{batch}"
        print(f"\n=== comparison run {name}: {norm} everywhere, {batch} image(s) per batch ===")
        base_lr = base.SOLVER.BASE_LR * batch / base.SOLVER.IMS_PER_BATCH
        overrides = [item for key in NORM_KEYS for item in (key, norm)]
        overrides += ["SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.BASE_LR", str(base_lr)]
        output_dir = os.path.join(args.output_dir, name)
        train(args.config_file, output_dir, [*args.opts, *overrides])
        runs[name] = read_metrics(os.path.join(output_dir, "metrics.json"))
    plot_comparison(runs, os.path.join(args.output_dir, "compare.png"))
    table = comparison_table(runs)
    with open(os.path.join(args.output_dir, "compare.json"), "w") as f:
        json.dump({name: final_metrics(metrics) for name, metrics in runs.items()}, f, indent=2)
    print("\n" + table + f"\n\nruns, compare.png and compare.json in {args.output_dir}")


def main(argv=None) -> int:
    """Runs the demo (or, with --compare, the comparison); returns the exit status."""
    start = time.perf_counter()
    args = parse_args(argv)
    try:
        claim_output_dir(args.output_dir, args.overwrite)
        prepare_dataset(args)
    except (FileExistsError, DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.compare:
        run_comparison(args)
    else:
        run_demo(args, start)
    return 0
