#!/usr/bin/env python
"""Speed of the gn_detection GroupNorm op against PyTorch's, on the CPU or a CUDA device.

    python tools/benchmark_gn.py [--quick] [--cold] [--threads N] [--allocator tuned|default|both] [--json FILE]
    python tools/benchmark_gn.py --device cuda [--dtypes float32,bfloat16] [--reps 50] [--json FILE]

Every shape and memory format is timed side by side and interleaved in one process:
ours vs F.group_norm ("gn") and the fused GroupNorm+ReLU vs group_norm then relu_
("gn+relu"), forward and forward+backward, beside a copy of the same tensor. Printed:
medians, the speed-up (median of per-repetition torch time / our time), bandwidths
under the byte model of gn_detection.benchmark.op, geometric means.

CPU (float32): samples of calibrated length after warm-up rounds that make no page
faults; --cold calls sets of tensors in turn, twice the last-level cache together, so
no call finds its data in cache. The allocator is "tuned" (glibc mallopt: freed memory
is reused) unless --allocator says otherwise; "both" reruns with the default one in a
child process. "at floor": torch's time over a copy's (fwd) or a copy's plus an add's
(fwd+bwd) of the same tensors, the speed-up of a kernel as fast as those.

CUDA: each call timed alone with CUDA events after flushing L2, median of --reps; "of
copy" is a pass's bandwidth under the byte model over the copy's bandwidth.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs from a checkout too
from gn_detection.benchmark import host  # noqa: E402
from gn_detection.benchmark.op import (  # noqa: E402
    FORMATS,
    GROUPS,
    QUICK_SHAPES,
    SHAPES,
    measure_shape_cpu,
    measure_shape_cuda,
    summarize,
)
from gn_detection.benchmark.timing import cuda_l2_bytes, l2_flush_bytes  # noqa: E402
from gn_detection.layers import cuda_compiled  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"shapes {', '.join(QUICK_SHAPES)}; CPU: fewer reps")
    parser.add_argument("--shapes", help="comma-separated subset of " + ", ".join(SHAPES))
    parser.add_argument("--reps", type=int, help="repetitions per row (CPU 15, quick 5; CUDA 50, at least 30)")
    parser.add_argument("--threads", type=int, default=2, help="CPU: torch.set_num_threads (default 2)")
    parser.add_argument("--allocator", choices=["tuned", "default", "both"], default="tuned", help="CPU only")
    parser.add_argument("--cold", action="store_true", help="CPU: every call on tensors out of cache")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="CUDA: comma-separated of " + ", ".join(DTYPES))
    parser.add_argument("--json", metavar="FILE", help="write every row as JSON")
    args = parser.parse_args(argv)
    args.shapes = args.shapes.split(",") if args.shapes else QUICK_SHAPES if args.quick else list(SHAPES)
    args.dtypes = args.dtypes.split(",")
    for name, known in (("shape", SHAPES), ("dtype", DTYPES)):
        unknown = [v for v in getattr(args, name + "s") if v not in known]
        if unknown:
            parser.error(f"unknown {name}s {unknown}; choose from {list(known)}")
    if args.reps is None:
        args.reps = 50 if args.device == "cuda" else 5 if args.quick else 15
    if args.device == "cuda" and args.reps < 30:
        parser.error("--reps: a CUDA median needs at least 30 repetitions")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    if args.device == "cuda" and not cuda_compiled():
        raise SystemExit("--device cuda: gn_detection was built without its CUDA kernels; rebuild with CUDA")
    return args


# Table columns: (title, row key, width, number format; "" for text).
ROW_COLUMNS = [("shape", "shape_name", 9, ""), ("N,C,H,W", "dims", 17, ""), ("format", "format", 13, "")]
CPU_COLUMNS = ROW_COLUMNS + [
    ("op", "op", 8, ""), ("pass", "pass", 8, ""), ("torch ms", "torch_ms", 9, ".3f"), ("ours ms", "ours_ms", 9, ".3f"),
    ("speedup", "speedup", 8, ".2f"), ("ours GB/s", "ours_gbs", 10, ".1f"), ("torch GB/s", "torch_gbs", 11, ".1f"),
    ("copy GB/s", "copy_gbs", 10, ".1f"), ("at floor", "floor_speedup", 9, ".2f")]
CUDA_COLUMNS = ROW_COLUMNS + [
    ("dtype", "dtype", 8, ""), ("op", "op", 8, ""), ("pass", "pass", 8, ""), ("torch ms", "torch_ms", 9, ".4f"),
    ("ours ms", "ours_ms", 9, ".4f"), ("speedup", "speedup", 8, ".2f"), ("ours GB/s", "ours_gbs", 10, ".0f"),
    ("copy GB/s", "copy_gbs", 10, ".0f"), ("ours/copy", "ours_of_copy", 10, ".2f"),
    ("torch/copy", "torch_of_copy", 11, ".2f")]


def print_rows(rows, columns) -> None:
    header = " ".join(f"{title:>{width}}" if fmt else f"{title:<{width}}" for title, _, width, fmt in columns)
    print(header + "\n" + "-" * len(header))
    for row in rows:
        values = dict(row, dims=",".join(map(str, row["shape"])))
        print(" ".join(f"{values[key]:>{width}{fmt}}" if fmt else f"{values[key]:<{width}}"
                       for _, key, width, fmt in columns))


def print_geomeans(means, label) -> None:
    print(f"\nGeometric mean speed-up (torch time / our time), {label}:")
    for name, value in means.items():
        print(f"  {name:<34} {value:6.2f}x")


def run_cpu(args, allocator_text: str) -> dict:
    torch.set_num_threads(args.threads)
    target_seconds = 0.005 if args.quick else 0.01
    print(f"GroupNorm benchmark: gn_detection vs torch {torch.__version__}, groups={GROUPS}, float32, CPU")
    print(f"CPU: {host.cpu_name()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}")
    print(f"Allocator: {allocator_text}")
    if args.cold:
        print(f"Cold: each shape is timed on sets of tensors called in turn, whose inputs together make at least "
              f"{2 * host.last_level_cache_bytes() >> 20} MiB (twice the last-level cache)")
    print(f"{args.reps} interleaved repetitions per row, medians")
    print("Bytes model: fwd 2|x| (read x, write y); fwd+bwd 5|x| (+ read dy, x, write dx); "
          "copy 2|x| into a preallocated buffer")
    print("at floor: torch time / elementwise floor (fwd: the copy; fwd+bwd: the copy plus an add, 3|x|)\n")
    before = host.cpu_snapshot()
    rows = [row for name in args.shapes for fmt in FORMATS
            for row in measure_shape_cpu(name, fmt, args.reps, target_seconds, args.cold)]
    load = host.other_load(before, host.cpu_snapshot())
    result = {"device": "cpu", "allocator": allocator_text, "threads": args.threads, "reps": args.reps,
              "cold": args.cold, "torch": torch.__version__, "cpu": host.cpu_name(), "rows": rows,
              "geomeans": summarize(rows), "other_load_cores": load}
    print_rows(rows, CPU_COLUMNS)
    print(host.contention_note(load))
    print_geomeans(result["geomeans"], allocator_text)
    return result


def run_default_allocator_child(args) -> dict:
    """This command with the default allocator in a fresh process (mallopt cannot be
    undone in this one); returns its results."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "default.json")
        command = [sys.executable, os.path.abspath(__file__), "--allocator", "default", "--json", path,
                   "--threads", str(args.threads), "--reps", str(args.reps), "--shapes", ",".join(args.shapes)]
        command += ["--cold"] if args.cold else []
        print("\n" + "=" * 30 + " default allocator (child process) " + "=" * 30, flush=True)
        subprocess.run(command, env=host.environment_without_allocator_overrides(), check=True)
        with open(path) as handle:
            return json.load(handle)["runs"][0]


def run_cuda(args) -> dict:
    device = torch.device("cuda", torch.cuda.current_device())
    l2 = cuda_l2_bytes(device)
    print(f"GroupNorm benchmark: gn_detection vs torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"groups={GROUPS}, {torch.cuda.get_device_name(device)}")
    print(f"Each call timed alone with CUDA events after writing {l2_flush_bytes(l2) >> 20} MiB "
          f"(L2: {l2 >> 20} MiB) and a ~1 ms GPU spin while the host queues it; {args.reps} interleaved "
          f"repetitions, medians")
    print("Bytes model: fwd 3|x| (statistics read, then read x and write y); fwd+bwd 5|x|; copy 2|x| into a "
          "preallocated buffer. ours/copy, torch/copy: bandwidth under the model over the copy's\n", flush=True)
    rows = [row for dtype in args.dtypes for name in args.shapes for fmt in FORMATS
            for row in measure_shape_cuda(name, fmt, DTYPES[dtype], args.reps, device)]
    result = {"device": "cuda", "gpu": torch.cuda.get_device_name(device), "l2_bytes": l2, "reps": args.reps,
              "torch": torch.__version__, "cuda": torch.version.cuda, "rows": rows, "geomeans": summarize(rows)}
    print_rows(rows, CUDA_COLUMNS)
    print_geomeans(result["geomeans"], "CUDA")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        runs = [run_cuda(args)]
    else:
        runs = [run_cpu(args, host.apply_allocator("tuned" if args.allocator == "both" else args.allocator))]
        if args.allocator == "both":
            runs.append(run_default_allocator_child(args))
            print("\n" + "=" * 30 + " allocator comparison: geometric means, tuned / default " + "=" * 30)
            for name in runs[0]["geomeans"]:
                print(f"  {name:<34} {runs[0]['geomeans'][name]:6.2f}x {runs[1]['geomeans'][name]:6.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "runs": runs}, handle,
                      indent=1)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
