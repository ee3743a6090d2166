"""Inference time of ONNX Runtime against eager PyTorch on the CPU, side by side in
one process (behind ``tools/benchmark_onnx.py``).

Models: the R50-FPN Mask R-CNN variants of :mod:`gn_detection.benchmark.model` with
their random seeded weights and common settings, (a) our GN (custom op, fused ReLU)
and (b) detectron2's own GN model (``nn.GroupNorm``, separate ReLU) with the same
weights, both eager; and (c) ONNX Runtime (CPU execution provider) running the ONNX
export of (a) (gn_detection.checkpoint.onnx_export: every GroupNorm one
GroupNormalization node; (b) exports to the same operators). Parts:

- "features": pixel normalization + backbone + FPN (``features.onnx``) on a batch;
- "model": the whole model on one image, masks left as the mask head's
  probabilities (``model.onnx``), as detectron2's ``TracingAdapter`` runs it eagerly.

Before timing, (c)'s outputs are compared with (a)'s (max absolute difference; the
detections paired by box) and (a)'s with (b)'s. Each repetition calls every variant
once, in rotated order (timing.rotated_order), so a shared machine's slow drifts hit
all alike; reported: medians over repetitions and the medians of per-repetition ratios.
"""

import statistics
import time
from typing import Callable, Dict

import onnx
import onnxruntime
import torch

from gn_detection.benchmark import host, model as bench
from gn_detection.benchmark.timing import median_ratio, rotated_order
from gn_detection.checkpoint.export import ExportError, FeatureExtractor
from gn_detection.checkpoint.onnx_check import as_arrays, compare_outputs, pair_detections, summarize
from gn_detection.checkpoint.onnx_export import detection_adapter, export_features_onnx, export_model_onnx
from gn_detection.data.synthetic import random_batch

VARIANTS = {
    "eager_ours": "(a) eager PyTorch, our GN op",
    "eager_d2": "(b) eager PyTorch, detectron2 GN (nn.GroupNorm)",
    "onnxruntime": "(c) ONNX Runtime, export of (a)",
}
PARTS = ("features", "model")
AGREEMENT_TOLERANCE = 1e-3


def build_models(rois: int, seed: int) -> Dict[str, torch.nn.Module]:
    """{"gn_ours": (a), "gn_d2": (b)} in eval mode, (a) with (b)'s weights, class
    scores confident (benchmark.model.confident_class_scores: every image keeps
    TEST.DETECTIONS_PER_IMAGE detections and the mask head runs on them)."""
    models = bench.build_variants(["gn_ours", "gn_d2"], "cpu", rois, seed)
    for model in models.values():
        bench.confident_class_scores(model)
        model.eval()
    return models


def cpu_session(data: bytes, threads: int) -> onnxruntime.InferenceSession:
    """ONNX Runtime on the CPU with ``threads`` intra-op threads, as torch gets."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _agreement(name: str, ours: dict, eager: dict, detections: bool) -> str:
    """'max |difference| x' or the reason the outputs disagree."""
    try:
        if detections:
            ours = pair_detections(name, ours, eager, AGREEMENT_TOLERANCE)
        return f"max |difference| {compare_outputs(name, ours, eager, AGREEMENT_TOLERANCE):.3g}"
    except ExportError as error:
        return f"DISAGREE: {error}"


def features_part(models, images: torch.Tensor, threads: int):
    """(callables {variant: fn}, notes) for the feature extractor on ``images``."""
    ours, theirs = FeatureExtractor(models["gn_ours"]).eval(), FeatureExtractor(models["gn_d2"]).eval()
    data = export_features_onnx(ours, images)
    session = cpu_session(data, threads)
    feed = {"images": images.numpy()}
    names = ours.feature_names
    with torch.no_grad():
        eager, reference = as_arrays(names, ours(images)), as_arrays(names, theirs(images))
    onnx_outputs = dict(zip(names, session.run(None, feed)))
    notes = {
        "graph": summarize_bytes(data),
        "(c) vs (a)": _agreement("features.onnx", onnx_outputs, eager, detections=False),
        "(a) vs (b)": _agreement("(a)", eager, reference, detections=False),
    }

    def no_grad(module):
        def call():
            with torch.no_grad():
                return module(images)
        return call

    return {"eager_ours": no_grad(ours), "eager_d2": no_grad(theirs), "onnxruntime": lambda: session.run(None, feed)}, notes


def model_part(models, image: torch.Tensor, threads: int):
    """(callables {variant: fn}, notes) for the whole model on ``image``."""
    ours, theirs = detection_adapter(models["gn_ours"], image), detection_adapter(models["gn_d2"], image)
    eager_outputs = ours(image)
    data, names = export_model_onnx(ours)
    session = cpu_session(data, threads)
    feed = {"image": image.numpy()}
    eager, reference = as_arrays(names, eager_outputs), as_arrays(names, theirs(image))
    onnx_outputs = dict(zip(names, session.run(None, feed)))
    notes = {
        "graph": summarize_bytes(data),
        "detections": f"{len(eager['scores'])} per image",
        "(c) vs (a)": _agreement("model.onnx", onnx_outputs, eager, detections=True),
        "(a) vs (b)": _agreement("(a)", eager, reference, detections=True),
    }
    return {"eager_ours": lambda: ours(image), "eager_d2": lambda: theirs(image),
            "onnxruntime": lambda: session.run(None, feed)}, notes  # fmt: skip


def summarize_bytes(data: bytes) -> str:
    """What the exported graph holds, in one line."""
    summary = summarize(onnx.load_from_string(data))
    return (f"opset {summary.opset}, {summary.group_norm_nodes} GroupNormalization nodes "
            f"({summary.group_norm_then_relu} followed by Relu), {sum(summary.op_counts.values())} nodes")  # fmt: skip


def time_calls(fns: Dict[str, Callable], reps: int, warmup: int, max_wait: float) -> Dict[str, dict]:
    """{variant: {"seconds": [...], "load": [...]}}: ``warmup`` untimed rounds, then
    ``reps`` repetitions of one call per variant in rotated_order; before each timed
    call, waits up to ``max_wait`` s for a quiet machine (benchmark.model.wait_until_quiet)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: {"seconds": [], "load": []} for name in fns}
    for rep in range(reps):
        for name in rotated_order(fns, rep):
            if max_wait > 0:
                bench.wait_until_quiet(max_wait)
            before = host.cpu_snapshot()
            start = time.perf_counter()
            fns[name]()
            samples[name]["seconds"].append(time.perf_counter() - start)
            samples[name]["load"].append(host.other_load(before, host.cpu_snapshot()))
    return samples


def rows(samples: Dict[str, dict]) -> Dict[str, dict]:
    """{variant: median ms, and the median per-repetition ratios to (a) and (b)}."""
    result = {}
    for name, sample in samples.items():
        result[name] = {
            "median_ms": 1e3 * statistics.median(sample["seconds"]),
            "vs_eager_ours": median_ratio(sample["seconds"], samples["eager_ours"]["seconds"]),
            "vs_eager_d2": median_ratio(sample["seconds"], samples["eager_d2"]["seconds"]),
            "other_load": statistics.median(sample["load"]),  # cores busy with other processes during its calls
        }
    return result


def run(parts=PARTS, height=384, width=512, batch=2, reps=5, warmup=2, threads=2, allocator="tuned",
        rois=512, seed=0, max_wait=30.0, printer=print) -> dict:  # fmt: skip
    """Measures ``parts`` and prints a table per part; returns the results."""
    torch.set_num_threads(threads)
    allocator_text = host.apply_allocator(allocator)
    printer(f"ONNX Runtime {onnxruntime.__version__} vs eager torch {torch.__version__} on the CPU "
            f"({host.cpu_name()}); {threads} threads each; {allocator_text}")  # fmt: skip
    models = build_models(rois, seed)
    images = [record["image"].float() for record in random_batch(max(batch, 1), height, width, seed=seed)]
    results = {}
    for part in parts:
        if part == "features":
            fns, notes = features_part(models, torch.stack(images[:batch]), threads)
            what = f"backbone+FPN on a batch of {batch} random images {height}x{width}"
        else:
            fns, notes = model_part(models, images[0], threads)
            what = f"whole Mask R-CNN on one random image {height}x{width}"
        printer(f"\n{part}: {what}")
        for key, value in notes.items():
            printer(f"  {key}: {value}")
        table = rows(time_calls(fns, reps, warmup, max_wait))
        load = max(row["other_load"] for row in table.values())  # the timed calls', not the waits'
        printer(f"  {'variant':<48} {'median ms':>10} {'/ (a)':>8} {'/ (b)':>8}")
        for name, row in table.items():
            printer(f"  {VARIANTS[name]:<48} {row['median_ms']:>10.1f} {row['vs_eager_ours']:>8.3f} "
                    f"{row['vs_eager_d2']:>8.3f}")  # fmt: skip
        printer(f"  ({reps} repetitions after {warmup} warm-up rounds; ratios: medians of per-repetition ratios; "
                f"median over each variant's timed calls: {host.contention_note(load)})")  # fmt: skip
        results[part] = {"what": what, "notes": notes, "rows": table}
    return results
