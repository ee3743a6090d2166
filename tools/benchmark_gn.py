#!/usr/bin/env python
"""Speed of the gn_detection GroupNorm op against PyTorch's, on the CPU.

    python tools/benchmark_gn.py [--quick] [--cold] [--threads N] [--allocator tuned|default|both] [--json FILE]

For every shape and memory format it times, side by side and interleaved in
one process: ours vs torch.nn.functional.group_norm ("gn"), and the fused
GroupNorm+ReLU vs group_norm followed by relu_ ("gn+relu"), each as forward
alone and as forward+backward, plus a copy into a preallocated buffer of the
same size (the bandwidth a streaming kernel can hope for) and an add of two
such tensors into it. It reports medians over repetitions, the speed-up
(median over repetitions of torch time / our time, each repetition timing both
back to back), effective GB/s, geometric means and the four targets of the op.

Bytes model of the effective bandwidth (the minimum traffic of each pass, the
same for both implementations, parameters and statistics neglected):
  forward          reads x, writes y                       2 * |x| bytes
  forward+backward forward + reads dy and x, writes dx     5 * |x| bytes
  copy             reads x, writes the buffer              2 * |x| bytes
  add              reads x and dy, writes the buffer       3 * |x| bytes

Elementwise floor: a forward moves what a copy moves, and a backward what an
add moves, so each row also gives torch's time over the copy's (fwd) or the
copy's plus the add's (fwd+bwd), measured on the same tensors in the same
repetitions: the speed-up a GroupNorm running at the speed of PyTorch's own
elementwise ops would show. When memory is slow that bound can fall under a
target: then a kernel meets it only by moving its bytes faster than those ops.

Cache (--cold): by default every call of a row reuses the same tensors, so a
tensor smaller than the last-level cache, or part of a larger one, may still
be there from the call before. --cold gives each shape enough sets of tensors
(together at least twice the last-level cache) and calls them in turn, each
set's outputs living until its next turn, so no call finds data that an earlier
call of its row left in cache, inputs or output buffers: in a network every
layer has tensors of its own.

Warm-up: every function runs in rounds until a round makes no page faults, so
no timed call waits on the kernel's zeroing of pages the heap has not used yet.

Allocator: glibc serves every allocation above 32 MB with a fresh mmap, so
large outputs page-fault on first touch and both sides wait on the kernel.
"tuned" (the default) calls mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)
at start so freed memory is reused; "default" leaves glibc alone; "both" runs
tuned here and the default setting in a child process, then compares them.
"""

import argparse
import ctypes
import functools
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

# Runs from a checkout too: the repository root holds the gn_detection package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gn_detection.layers import cuda_compiled, group_norm  # noqa: E402

GROUPS = 32
# Mask R-CNN R50-FPN at 800x1333 with 2 images, its box and mask heads, and a small map.
SHAPES = {
    "fpn_p2": (2, 256, 200, 336),
    "fpn_p3": (2, 256, 100, 168),
    "res3": (2, 512, 100, 168),
    "res4": (2, 1024, 50, 84),
    "res5": (2, 2048, 25, 42),
    "box_head": (1024, 256, 7, 7),
    "mask_head": (256, 256, 14, 14),
    "small": (1, 32, 64, 64),
}
QUICK_SHAPES = ["fpn_p3", "res5", "box_head", "mask_head", "small"]
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
PASSES = {"fwd": 2, "fwd+bwd": 5}  # bytes model: multiples of |x|
OPS = ["gn", "gn+relu"]

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
MALLOC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (under ~2 minutes)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per row (default 15, quick 5)")
    parser.add_argument("--allocator", choices=["tuned", "default", "both"], default="tuned")
    parser.add_argument("--cold", action="store_true", help="every call on tensors out of cache (see above)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.quick else 15
    return args


def apply_allocator(setting: str) -> str:
    """Configures glibc malloc for `setting`; returns a one-line description."""
    overrides = [f"{name}={os.environ[name]}" for name in MALLOC_ENV if name in os.environ]
    if setting == "default":
        if overrides:
            return "default glibc malloc, BUT environment overrides are set: " + " ".join(overrides)
        return "default glibc malloc (allocations > 32 MB are fresh mmaps)"
    libc = ctypes.CDLL("libc.so.6")
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        raise SystemExit("mallopt failed: the tuned allocator setting needs glibc")
    return "tuned glibc malloc: mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_snapshot():
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall time)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    ticks = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (sum(fields) - idle) / ticks, own.user + own.system, time.monotonic()


def other_load(before, after) -> float:
    """Cores kept busy by other processes between two snapshots, on average."""
    busy, own, wall = (a - b for a, b in zip(after, before))
    return max(0.0, (busy - own) / max(wall, 1e-9))


def contention_note(load: float) -> str:
    """Other processes make a 2-thread op wait for a scheduler time slice (~10 ms)
    at every parallel region, which swamps the differences measured here."""
    note = f"other processes kept {load:.2f} of {os.cpu_count()} cores busy during the run"
    if load > 0.25:
        note = "WARNING: " + note + ": times are inflated and ratios unreliable; rerun on an idle machine"
    return note


@functools.cache
def last_level_cache_bytes() -> int:
    """Size of the CPU's last-level cache (Linux sysfs), 32 MiB when unknown; read once."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for index in range(8):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as handle:
                text = handle.read().strip()
        except OSError:
            break
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=32 << 20)


def tensor_sets(nbytes: int, cold: bool) -> int:
    """Sets of tensors a shape is timed on: 1, or with --cold enough that their inputs
    together are twice the last-level cache, so a set is out of cache when its turn comes again."""
    return max(1, math.ceil(2 * last_level_cache_bytes() / nbytes)) if cold else 1


def in_turn(fns):
    """One function calling fns[0], fns[1], ... in turn (itself when there is one).

    Each function's result lives until its next turn, as a layer's output lives
    on in a network. Freed at once, the output of one call would be the buffer
    the allocator hands the next call, still in cache from the call before.
    """
    if len(fns) == 1:
        return fns[0]
    results = [None] * len(fns)
    turn = itertools.cycle(range(len(fns)))

    def call():
        index = next(turn)
        results[index] = fns[index]()

    return call


def make_tensors(shape, memory_format):
    """x, weight, bias, dy and a copy buffer; x/weight/bias in a no-grad and a requires-grad version."""
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    weight = 1 + 0.1 * torch.randn(shape[1])
    bias = 0.1 * torch.randn(shape[1])
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    return {
        "plain": (x, weight, bias),
        "leaves": leaves,
        "dy": torch.randn(shape).contiguous(memory_format=memory_format),
        "buffer": torch.empty_like(x),
    }


def forward_fn(impl: str, op: str):
    """f(x, weight, bias) -> y for one implementation ("ours"/"torch") and op ("gn"/"gn+relu")."""
    relu = op == "gn+relu"
    if impl == "ours":
        activation = "relu" if relu else None
        return lambda x, w, b: group_norm(x, GROUPS, w, b, activation=activation)
    if relu:
        return lambda x, w, b: F.group_norm(x, GROUPS, w, b).relu_()
    return lambda x, w, b: F.group_norm(x, GROUPS, w, b)


def make_callable(impl: str, op: str, pass_name: str, tensors):
    """A no-argument function running one pass of one implementation."""
    fn = forward_fn(impl, op)
    if pass_name == "fwd":
        x, w, b = tensors["plain"]
        return lambda: fn(x, w, b)
    leaves, dy = tensors["leaves"], tensors["dy"]

    def forward_backward():
        y = fn(*leaves)
        return y, torch.autograd.grad(y, leaves, dy)

    return forward_backward


def check_agreement(tensors, op: str) -> float:
    """Max |ours - torch| of the forward, so a broken op is not benchmarked."""
    x, w, b = tensors["plain"]
    return (forward_fn("ours", op)(x, w, b) - forward_fn("torch", op)(x, w, b)).abs().max().item()


def calibrate(fn, target_seconds: float) -> int:
    """Calls per sample so that one sample lasts about `target_seconds`."""
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return max(1, math.ceil(target_seconds / max(elapsed, 1e-7)))


def page_fault_bytes() -> int:
    """Bytes of pages this process has touched for the first time so far (minor faults)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt * resource.getpagesize()


def warm_up(fns: dict, calls: int) -> None:
    """Rounds of `calls` calls of every function until a round makes no page faults,
    or no fewer than the round before (glibc's default allocator maps every large
    output afresh, so its faults never stop). Until then the heap is still growing
    (the outputs --cold keeps alive take a few rounds to find their places), and a
    timed call would pay the kernel's page zeroing."""
    previous = math.inf
    while True:
        before = page_fault_bytes()
        for fn in fns.values():
            for _ in range(calls):
                fn()
        faults = page_fault_bytes() - before
        if faults == 0 or faults >= previous:
            return
        previous = faults


def time_interleaved(fns: dict, reps: int, target_seconds: float, warmup_calls: int = 3) -> dict:
    """Per-call times (seconds) of every function, `reps` samples each, after warm_up.

    Each repetition runs every function once (a sample of `inner` calls), in an
    order rotated from one repetition to the next and reversed every other
    one, so slow drifts of the machine hit all of them alike and neither side
    of a pair always runs first.
    """
    warm_up(fns, warmup_calls)
    inner = {name: calibrate(fn, target_seconds) for name, fn in fns.items()}
    names = list(fns)
    samples = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        order = names[shift:] + names[:shift]
        for name in order[::-1] if rep % 2 else order:
            fn, count = fns[name], inner[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def measure_shape(shape_name, fmt, reps, target_seconds, cold=False):
    """All rows of one shape and memory format, timed in one interleaved batch."""
    shape = SHAPES[shape_name]
    nbytes = math.prod(shape) * 4  # float32
    sets = [make_tensors(shape, FORMATS[fmt]) for _ in range(tensor_sets(nbytes, cold))]
    for op in OPS:
        difference = check_agreement(sets[0], op)
        if not difference < 1e-3:
            raise SystemExit(f"ours and torch disagree on {shape} {fmt} {op}: max |diff| {difference:.3g}")
    fns = {
        "copy": in_turn([lambda t=t: t["buffer"].copy_(t["plain"][0]) for t in sets]),
        "add": in_turn([lambda t=t: torch.add(t["plain"][0], t["dy"], out=t["buffer"]) for t in sets]),
    }
    for op in OPS:
        for pass_name in PASSES:
            for impl in ("ours", "torch"):
                fns[(impl, op, pass_name)] = in_turn([make_callable(impl, op, pass_name, t) for t in sets])
    samples = time_interleaved(fns, reps, target_seconds, warmup_calls=max(3, len(sets)))
    copy_gbs = 2 * nbytes / statistics.median(samples["copy"]) / 1e9
    floors = {"fwd": samples["copy"], "fwd+bwd": [c + a for c, a in zip(samples["copy"], samples["add"])]}
    rows = []
    for op in OPS:
        for pass_name, multiple in PASSES.items():
            ours, theirs = samples[("ours", op, pass_name)], samples[("torch", op, pass_name)]
            floor = floors[pass_name]
            rows.append({
                "shape_name": shape_name,
                "shape": list(shape),
                "format": fmt,
                "op": op,
                "pass": pass_name,
                "torch_ms": statistics.median(theirs) * 1e3,
                "ours_ms": statistics.median(ours) * 1e3,
                "speedup": statistics.median(t / o for t, o in zip(theirs, ours)),
                "ours_gbs": multiple * nbytes / statistics.median(ours) / 1e9,
                "torch_gbs": multiple * nbytes / statistics.median(theirs) / 1e9,
                "copy_gbs": copy_gbs,
                "floor_ms": statistics.median(floor) * 1e3,
                "floor_speedup": statistics.median(t / f for t, f in zip(theirs, floor)),
                "tensor_sets": len(sets),
            })
    return rows


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def summarize(rows) -> dict:
    """Geometric means of the speed-up over the row sets the targets speak of."""
    return {
        "all rows": geomean(r["speedup"] for r in rows),
        "gn+relu fwd+bwd": geomean(r["speedup"] for r in rows if r["op"] == "gn+relu" and r["pass"] == "fwd+bwd"),
        "gn channels_last": geomean(r["speedup"] for r in rows if r["op"] == "gn" and r["format"] == "channels_last"),
    }


def check_targets(rows, means) -> list:
    """The op's four speed targets as (description, measured, threshold, passed)."""
    heads = [r for r in rows if r["shape_name"] in ("box_head", "mask_head") and r["pass"] == "fwd+bwd"
             and r["op"] == "gn"]
    targets = []
    if heads:
        worst = min(heads, key=lambda r: r["speedup"])
        label = f"box/mask head gn fwd+bwd, min (at {worst['shape_name']} {worst['format']})"
        targets.append((label, worst["speedup"], 1.5, worst["floor_speedup"]))
    worst = min(rows, key=lambda r: r["speedup"])
    label = f"every row, min (at {worst['shape_name']} {worst['format']} {worst['op']} {worst['pass']})"
    targets.append((label, worst["speedup"], 0.95, None))
    targets.append(("gn+relu fwd+bwd, geometric mean", means["gn+relu fwd+bwd"], 1.4, None))
    targets.append(("gn channels_last, geometric mean", means["gn channels_last"], 1.3, None))
    return [{"target": t, "measured": m, "threshold": th, "passed": m >= th, "floor_speedup": f}
            for t, m, th, f in targets]


def print_rows(rows) -> None:
    header = (f"{'shape':<9} {'N,C,H,W':<17} {'format':<13} {'op':<8} {'pass':<8} {'torch ms':>9} "
              f"{'ours ms':>9} {'speedup':>8} {'ours GB/s':>10} {'torch GB/s':>11} {'copy GB/s':>10} {'at floor':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        shape = ",".join(map(str, r["shape"]))
        print(f"{r['shape_name']:<9} {shape:<17} {r['format']:<13} {r['op']:<8} {r['pass']:<8} "
              f"{r['torch_ms']:>9.3f} {r['ours_ms']:>9.3f} {r['speedup']:>7.2f}x {r['ours_gbs']:>10.1f} "
              f"{r['torch_gbs']:>11.1f} {r['copy_gbs']:>10.1f} {r['floor_speedup']:>8.2f}x")


def print_summary(result) -> None:
    print(f"\nGeometric mean speed-up (torch time / our time), {result['allocator']}:")
    for name, value in result["geomeans"].items():
        print(f"  {name:<20} {value:6.2f}x")
    print("\nTargets:")
    for t in result["targets"]:
        verdict = "PASS" if t["passed"] else "FAIL"
        floor = t["floor_speedup"]
        bound = f"; at the elementwise floor {floor:.2f}x" if floor is not None else ""
        print(f"  {verdict}  {t['target']:<62} {t['measured']:6.3f}x  (needs >= {t['threshold']}x{bound})")


def run_benchmark(args, allocator_text: str) -> dict:
    torch.set_num_threads(args.threads)
    shape_names = QUICK_SHAPES if args.quick else list(SHAPES)
    target_seconds = 0.005 if args.quick else 0.01
    print(f"GroupNorm benchmark: gn_detection vs torch {torch.__version__}, groups={GROUPS}, float32")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; torch threads: {torch.get_num_threads()}")
    print(f"Allocator: {allocator_text}")
    if args.cold:
        print(f"Cold: each shape is timed on sets of tensors called in turn, whose inputs together make at least "
              f"{2 * last_level_cache_bytes() >> 20} MiB (twice the last-level cache)")
    before = cpu_snapshot()
    print(f"{args.reps} interleaved repetitions per row, medians; gn_detection CUDA kernels compiled: "
          f"{cuda_compiled()}")
    print("Bytes model: fwd 2|x| (read x, write y); fwd+bwd 5|x| (+ read dy, x, write dx); "
          "copy 2|x| into a preallocated buffer")
    print("at floor: torch time / elementwise floor (fwd: the copy; fwd+bwd: the copy plus an add, 3|x|), "
          "the speed-up of a kernel as fast as those\n")
    rows = []
    for shape_name in shape_names:
        for fmt in FORMATS:
            rows.extend(measure_shape(shape_name, fmt, args.reps, target_seconds, args.cold))
    means = summarize(rows)
    result = {"allocator": allocator_text, "threads": args.threads, "reps": args.reps, "quick": args.quick,
              "cold": args.cold,
              "torch": torch.__version__, "cpu": cpu_name(), "rows": rows, "geomeans": means,
              "targets": check_targets(rows, means), "other_load_cores": other_load(before, cpu_snapshot())}
    print_rows(rows)
    print(contention_note(result["other_load_cores"]))
    print_summary(result)
    return result


def run_default_in_child(args) -> dict:
    """Runs this script with the default allocator in a fresh process (mallopt
    cannot be undone in this one) and returns its results."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "default.json")
        command = [sys.executable, os.path.abspath(__file__), "--allocator", "default", "--json", path,
                   "--threads", str(args.threads), "--reps", str(args.reps)] + (["--quick"] if args.quick else []) \
            + (["--cold"] if args.cold else [])
        print("\n" + "=" * 30 + " default allocator (child process) " + "=" * 30, flush=True)
        subprocess.run(command, env=env, check=True)
        with open(path) as handle:
            return json.load(handle)["runs"][0]


def print_comparison(tuned, default) -> None:
    print("\n" + "=" * 30 + " allocator comparison " + "=" * 30)
    print(f"{'':<40} {'tuned':>8} {'default':>8}")
    for name in tuned["geomeans"]:
        print(f"geomean speed-up, {name:<22} {tuned['geomeans'][name]:>7.2f}x {default['geomeans'][name]:>7.2f}x")
    for t_tuned, t_default in zip(tuned["targets"], default["targets"]):
        verdicts = f"{'PASS' if t_tuned['passed'] else 'FAIL'} / {'PASS' if t_default['passed'] else 'FAIL'}"
        print(f"target >= {t_tuned['threshold']}x: {t_tuned['target'][:45]:<45} "
              f"{t_tuned['measured']:5.2f}x {t_default['measured']:5.2f}x  {verdicts}")


def main(argv=None) -> int:
    args = parse_args(argv)
    setting = "tuned" if args.allocator == "both" else args.allocator
    allocator_text = apply_allocator(setting)
    runs = [run_benchmark(args, allocator_text)]
    if args.allocator == "both":
        runs.append(run_default_in_child(args))
        print_comparison(runs[0], runs[1])
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "runs": runs},
                      handle, indent=1)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
