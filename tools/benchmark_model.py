#!/usr/bin/env python
"""Speed and memory of R50-FPN Mask R-CNN with (a) our GN, (b) detectron2's GN model
and (c) BN*, side by side in one process, on the CPU or a CUDA device.

    python tools/benchmark_model.py [--threads 2] [--allocator tuned|default] [--json FILE]
    python tools/benchmark_model.py --device cuda [--amp bf16|fp16|off] [--json FILE]

The models, batch and steps are gn_detection.benchmark.model's: random seeded weights,
(a) with (b)'s weights, a random batch with box-shaped instances (CPU 2 images of
384x512, CUDA 2 of 800x1333), a training step (lr-0 SGD) and an inference. Printed:
median times over interleaved repetitions after warm-up, per-repetition ratios to (b)
and (c), peak memory (gn_detection.benchmark.memory), and from torch.profiler the share
of each op group, normalization + activation together, in the step's wall time
(gn_detection.benchmark.profile_share).
"""

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs from a checkout too
from gn_detection.benchmark import host, memory, model as bench, profile_share  # noqa: E402
from gn_detection.benchmark.timing import median_ratio  # noqa: E402
from gn_detection.data.synthetic import random_batch  # noqa: E402
from gn_detection.layers import cuda_compiled  # noqa: E402

DEFAULTS = {  # per device: image size, repetitions, warm-up rounds, profiled steps, wait for quiet (s)
    "cpu": {"height": 384, "width": 512, "reps": 3, "warmup_rounds": 6, "profile_steps": 2, "wait_idle": 30.0},
    "cuda": {"height": 800, "width": 1333, "reps": 10, "warmup_rounds": 3, "profile_steps": 1, "wait_idle": 0.0},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=list(bench.AMP_DTYPES), default="off", help="autocast dtype (default off)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--height", type=int, help="image height (CPU 384, CUDA 800)")
    parser.add_argument("--width", type=int, help="image width (CPU 512, CUDA 1333)")
    parser.add_argument("--instances", type=int, default=6, help="ground-truth instances per image (default 6)")
    parser.add_argument("--rois", type=int, default=512, help="ROI_HEADS.BATCH_SIZE_PER_IMAGE (detectron2's 512)")
    parser.add_argument("--reps", type=int, help="timed repetitions (CPU 3, CUDA 10)")
    parser.add_argument("--warmup-rounds", type=int, help="CPU: at most, until the heap settles (6); CUDA: 3")
    parser.add_argument("--profile-steps", type=int, help="profiled steps per variant and mode (CPU 2, CUDA 1)")
    parser.add_argument("--wait-idle", type=float, metavar="SECONDS",
                        help="CPU: before each timed sample wait up to this long for a quiet machine (30)")
    parser.add_argument("--threads", type=int, default=2, help="CPU: torch.set_num_threads (default 2)")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned", help="CPU: glibc malloc")
    parser.add_argument("--variants", default=",".join(bench.VARIANTS), help="subset of " + ", ".join(bench.VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.reps, args.warmup_rounds, args.profile_steps) < 1:
        parser.error("--reps, --warmup-rounds and --profile-steps must be at least 1")
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in bench.VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(bench.VARIANTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    if args.device == "cuda" and not cuda_compiled():
        raise SystemExit("--device cuda: gn_detection was built without its CUDA kernels; rebuild with CUDA")
    return args


def measure_memory(args, runners) -> dict:
    if args.device == "cuda":
        return {name: memory.cuda_peaks(runner) for name, runner in runners.items()}
    keys = ("allocator", "threads", "rois", "seed", "images", "height", "width", "instances")
    return {name: memory.cpu_peak_in_child({"variant": name, **{k: getattr(args, k) for k in keys}})
            for name in args.variants}


def print_header(args, models, allocator_text) -> None:
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{host.cpu_name()}, {os.cpu_count()} cores"
    print(f"Mask R-CNN R50-FPN benchmark: torch {torch.__version__}, {args.device} ({where}), autocast {args.amp}")
    if args.device == "cpu":
        print(f"torch threads {torch.get_num_threads()}; allocator: {allocator_text}")
    print(f"Batch: {args.images} random images {args.height}x{args.width}, {args.instances} box-shaped instances "
          f"each, seed {args.seed}; training samples {args.rois} RoIs per image")
    print("Common settings: " + ", ".join(f"{k} {v}" for k, v in bench.common_settings(args.device, args.rois)))
    for name, model in models.items():
        label, source, opts = bench.VARIANTS[name]
        norms = ", ".join(f"{k} {v}" for k, v in bench.count_norms(model).items() if v)
        print(f"  {label}: {source} {' '.join(map(str, opts))}\n      {norms}; "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def print_times(samples) -> dict:
    rows = {}
    print(f"\n{'variant':<40} {'train s':>9} {'infer s':>9} {'train/(b)':>10} {'train/(c)':>10} {'infer/(b)':>10} "
          f"{'infer/(c)':>10}")
    for name, s in samples.items():
        row = {"train_s": statistics.median(s["train"]), "infer_s": statistics.median(s["infer"]), "samples": s}
        line = f"{bench.VARIANTS[name][0]:<40} {row['train_s']:>9.3f} {row['infer_s']:>9.3f}"
        for mode in ("train", "infer"):
            for ref, tag in (("gn_d2", "b"), ("bn_frozen", "c")):
                if ref in samples:
                    row[f"{mode}_vs_{tag}"] = median_ratio(s[mode], samples[ref][mode])
                line += f" {row[f'{mode}_vs_{tag}']:>10.3f}" if ref in samples else f" {'-':>10}"
        rows[name] = row
        print(line)
    print("(medians over repetitions; ratios: medians of per-repetition ratios)")
    return rows


def print_memory(results, device) -> None:
    what = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak resident set, fresh child per variant"
    print(f"\nPeak memory (MiB; {what}; 'above' = peak - before):")
    print(f"{'variant':<40} {'before':>8} {'infer peak':>11} {'above':>8} {'train peak':>11} {'above':>8}")
    for name, m in results.items():
        print(f"{bench.VARIANTS[name][0]:<40} {m['before'] / 2**20:>8.0f} {m['infer_peak'] / 2**20:>11.0f} "
              f"{(m['infer_peak'] - m['before']) / 2**20:>8.0f} {m['train_peak'] / 2**20:>11.0f} "
              f"{(m['train_peak'] - m['before']) / 2**20:>8.0f}")


def print_shares(profiles, mode, device) -> None:
    what = "kernel time of" if device == "cuda" else "CPU time of"
    print(f"\nProfiled {'training step' if mode == 'train' else 'inference'}: {what} each op group, ms and share of "
          f"the wall time (median of the profiled steps)")
    names = list(profiles)
    print(f"{'op group':<22}" + "".join(f"{n:>20}" for n in names))
    for group in profile_share.GROUPS:
        for part in ("fwd", "bwd") if mode == "train" else ("fwd",):
            found = [profiles[n][mode]["groups"][(group, part)] for n in names]
            if any(g["calls"] for g in found):
                print(f"{group + ' ' + part:<22}" + "".join(
                    f"{g['us'] / 1e3:>11.1f} {profiles[n][mode]['shares'][f'{group}_{part}']:>7.1%} "
                    for n, g in zip(names, found)))
    print(f"{'= norm + activation':<22}" + "".join(
        f"{profiles[n][mode]['shares']['norm_act'] * profiles[n][mode]['wall_s'] * 1e3:>11.1f} "
        f"{profiles[n][mode]['shares']['norm_act']:>7.1%} " for n in names))
    print(f"{'wall time':<22}" + "".join(f"{profiles[n][mode]['wall_s'] * 1e3:>11.1f} {'':>8}" for n in names))


def main(argv=None) -> int:
    args = parse_args(argv)
    allocator_text = host.apply_allocator(args.allocator) if args.device == "cpu" else None
    torch.set_num_threads(args.threads)
    memory_results = {} if args.no_memory or args.device == "cuda" else measure_memory(args, None)
    start = host.cpu_snapshot()
    models = bench.build_variants(args.variants, args.device, args.rois, args.seed)
    batch = random_batch(args.images, args.height, args.width, args.instances, seed=args.seed)
    bench.prepare(models, batch)
    amp = bench.AMP_DTYPES[args.amp]
    runners = {name: bench.Runner(model, batch, args.seed, amp) for name, model in models.items()}
    print_header(args, models, allocator_text)

    cpu = args.device == "cpu"
    warmup = bench.warm_up(runners, args.warmup_rounds, until_settled=cpu, faults_persist=args.allocator == "default")
    dtypes = {name: bench.norm_output_dtypes(runner) for name, runner in runners.items()}
    print(f"\nWarm-up: {len(warmup)} round(s). Norm layers' output dtypes in a training step: "
          + "; ".join(f"{name} {counts}" for name, counts in dtypes.items()))
    print(f"Timing {args.reps} interleaved repetitions ...", flush=True)
    samples = bench.time_steps(runners, args.reps, args.wait_idle if cpu else 0.0, report=lambda rep, name, s: print(
        f"  rep {rep + 1} {name:<10} train {s['train']:.3f} s  infer {s['infer']:.3f} s  "
        f"other load {s['load']:.2f} cores", flush=True))
    for name, runner in runners.items():
        print(f"  {name}: last step RoIs {runner.last_rois}, detections/image {runner.last_detections}, losses "
              + ", ".join(f"{k} {v:.3g}" for k, v in runner.last_losses.items()))
    if args.device == "cuda" and not args.no_memory:
        memory_results = measure_memory(args, runners)
    profiles = {} if args.no_profile else profile_share.profile_interleaved(
        runners, args.profile_steps, unrecorded=1 if cpu else 0)
    load = host.other_load(start, host.cpu_snapshot())

    timing = print_times(samples)
    if memory_results:
        print_memory(memory_results, args.device)
    for mode in ("train", "infer") if profiles else ():
        print_shares(profiles, mode, args.device)
    print("\n" + host.contention_note(load))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        result = {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "torch": torch.__version__,
            "device": args.device, "device_name": torch.cuda.get_device_name() if args.device == "cuda"
            else host.cpu_name(), "amp": args.amp, "allocator": allocator_text,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "common_settings": dict(bench.common_settings(args.device, args.rois)),
            "variants": {n: dict(zip(("label", "config", "opts"), bench.VARIANTS[n])) for n in args.variants},
            "norm_output_dtypes": dtypes, "warmup_fault_bytes": warmup, "timing": timing,
            "memory_bytes": memory_results, "other_load_cores": load,
            "last_step": {n: {"losses": r.last_losses, "rois": r.last_rois, "detections": r.last_detections}
                          for n, r in runners.items()},
            "profile": {n: {mode: {"wall_s": p["wall_s"], "shares": p["shares"],
                                   "groups": {f"{g}_{part}": v for (g, part), v in p["groups"].items()}}
                            for mode, p in modes.items()} for n, modes in profiles.items()},
        }
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
