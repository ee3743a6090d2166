"""Side-by-side timing: competing functions run interleaved in one process, so
slow drifts of a shared machine hit all of them alike, and each is reported as
the median over repetitions.

CPU: each sample is a run of calls long enough for the wall clock (calibrate),
after warm-up rounds that end when the heap stops growing (warm_up).
CUDA: each call is timed alone with CUDA events, after a write of a buffer larger
than the L2 cache (no call finds its data left in L2 by the call before) and a GPU
spin that lets the host queue the whole call (launch overhead is not timed).
"""

import itertools
import math
import statistics
import time

import torch

from gn_detection.benchmark.host import last_level_cache_bytes, page_fault_bytes


def rotated_order(names, rep: int) -> list:
    """The order of repetition `rep`: rotated by one per repetition and reversed every
    other one, so neither side of a pair always runs first."""
    names = list(names)
    shift = rep % len(names)
    order = names[shift:] + names[:shift]
    return order[::-1] if rep % 2 else order


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def median_ratio(numerators, denominators) -> float:
    """Median of the per-repetition ratios (each pair measured back to back)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def tensor_sets(nbytes: int, cold: bool) -> int:
    """Sets of tensors a shape is timed on: 1, or with `cold` enough that their inputs
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


def calibrate(fn, target_seconds: float) -> int:
    """Calls per sample so that one sample lasts about `target_seconds`."""
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    return max(1, math.ceil(target_seconds / max(elapsed, 1e-7)))


def warm_up(fns: dict, calls: int) -> None:
    """Rounds of `calls` calls of every function until a round makes no page faults,
    or no fewer than the round before (glibc's default allocator maps every large
    output afresh, so its faults never stop). Until then the heap is still growing,
    and a timed call would pay the kernel's page zeroing."""
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
    """{name: [seconds per call] * reps} on the CPU, after warm_up: each repetition
    runs every function once (a sample of calibrated length), in rotated_order."""
    warm_up(fns, warmup_calls)
    inner = {name: calibrate(fn, target_seconds) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for rep in range(reps):
        for name in rotated_order(fns, rep):
            fn, count = fns[name], inner[name]
            start = time.perf_counter()
            for _ in range(count):
                fn()
            samples[name].append((time.perf_counter() - start) / count)
    return samples


def l2_flush_bytes(l2_bytes: int) -> int:
    """Size of the buffer written between timed CUDA calls: twice the L2 cache (256 MiB
    when its size is not reported), so nothing a call leaves in L2 survives to the next."""
    return 2 * l2_bytes if l2_bytes > 0 else 256 << 20


def cuda_l2_bytes(device) -> int:
    """The L2 cache size torch reports for `device` (0 when it reports none)."""
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0))


def spin_cycles(device, milliseconds: float) -> int:
    """GPU clock cycles of torch.cuda._sleep that last about `milliseconds` (measured)."""
    torch.cuda._sleep(1000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(1_000_000)
    end.record()
    torch.cuda.synchronize(device)
    return max(1, int(1_000_000 * milliseconds / start.elapsed_time(end)))


def time_cuda_interleaved(fns: dict, reps: int, device, warmup_calls: int = 3, head_start_ms: float = 1.0) -> dict:
    """{name: [seconds] * reps} of single calls on a CUDA device (kernel time).

    Before each call: a write of a buffer twice the L2 size (so the call's inputs
    come from device memory, as a layer's do in a network), then a GPU spin of about
    `head_start_ms` while the host queues the call, so the time between the call's
    two CUDA events is its kernels' and not the host's launch overhead. Repetitions
    run every function once, in rotated_order; one synchronization per repetition.
    """
    flush = torch.empty(l2_flush_bytes(cuda_l2_bytes(device)), dtype=torch.uint8, device=device)
    for fn in fns.values():
        for _ in range(warmup_calls):
            fn()
    cycles = spin_cycles(device, head_start_ms)
    samples = {name: [] for name in fns}
    for rep in range(reps):
        events = []
        for name in rotated_order(fns, rep):
            flush.zero_()
            torch.cuda._sleep(cycles)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[name]()
            end.record()
            events.append((name, start, end))
        torch.cuda.synchronize(device)
        for name, start, end in events:
            samples[name].append(start.elapsed_time(end) / 1e3)
    return samples
