"""Where a profiled training step or inference spends its time: op groups (our GN,
PyTorch's GN, ReLU, BN*, convolution), forward and backward, as shares of the step's
wall time. On the CPU a group's time is its ops' CPU time; on CUDA, the time of the
kernels its ops launch.

An op counts once: an event inside another event of its own group on the same thread
(CUDA autocast's aten::group_norm casts the inputs and calls aten::group_norm again)
is part of the outer one. PyTorch's GN forward is aten::group_norm, which
includes autocast's casts of its inputs to float32 (their backward is not counted).
FrozenBatchNorm2d has no op of its own in training (it computes x * scale + bias):
its forward is a record_function range opened and closed by module hooks, and its
backward is the autograd nodes that carry the sequence number and the op of one of
the range's ops (an op that makes no node, such as batch_norm on a frozen stem's
input, shares its number with the next node made, elsewhere).
"""

import contextlib
import statistics
import time

import torch
from detectron2.layers import FrozenBatchNorm2d

FROZEN_BN_RANGE = "benchmark::FrozenBatchNorm2d"
BACKWARD_NODE = "autograd::engine::evaluate_function: "
# group: (forward op names, backward op names)
GROUPS = {
    "gn_ours": (("gn_detection::group_norm_forward",), ("gn_detection::group_norm_backward",)),
    "gn_torch": (("aten::group_norm",), ("aten::native_group_norm_backward",)),
    "relu": (("aten::relu", "aten::relu_"), ("aten::threshold_backward",)),
    "bn_frozen": ((FROZEN_BN_RANGE, "aten::batch_norm"), ()),
    "conv": (("aten::convolution",), ("aten::convolution_backward",)),
}
NORM_ACT = ("gn_ours", "gn_torch", "relu", "bn_frozen")


@contextlib.contextmanager
def labelled_frozen_bn(model):
    """Wraps every FrozenBatchNorm2d's forward in a FROZEN_BN_RANGE profiler range."""
    open_ranges = {}

    def enter(module, inputs):
        open_ranges[module] = torch.profiler.record_function(FROZEN_BN_RANGE)
        open_ranges[module].__enter__()

    def leave(module, inputs, output):
        open_ranges.pop(module).__exit__(None, None, None)

    modules = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    handles = [m.register_forward_pre_hook(enter) for m in modules] + [m.register_forward_hook(leave) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def outermost(events):
    """The events not inside another of `events` on the same thread."""
    kept = []
    ends = {}
    for event in sorted(events, key=lambda e: (e.thread, e.time_range.start, -e.time_range.end)):
        if event.time_range.end <= ends.get(event.thread, -1):
            continue
        kept.append(event)
        ends[event.thread] = event.time_range.end
    return kept


def op_key(name: str) -> str:
    """The op an event runs, for matching a forward op to its backward node:
    "aten::mul" and "autograd::engine::evaluate_function: MulBackward0" both give "mul"."""
    if name.startswith(BACKWARD_NODE):
        return name[len(BACKWARD_NODE):].lower().rsplit("backward", 1)[0]
    return name.rsplit("::", 1)[-1].replace("_", "")


def group_events(events) -> dict:
    """{(group, "fwd"|"bwd"): [outermost events]} of a profile's CPU-side events."""
    events = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    # (sequence number, op) of the ops inside BN* ranges, to find their backward nodes by
    bn_ops = {(child.sequence_nr, op_key(child.name)) for e in events if e.name == FROZEN_BN_RANGE
              for child in e.cpu_children}
    grouped = {}
    for group, (forward_names, backward_names) in GROUPS.items():
        grouped[(group, "fwd")] = outermost([e for e in events if e.name in forward_names])
        if group == "bn_frozen":
            backward = [e for e in events if e.name.startswith(BACKWARD_NODE)
                        and (e.sequence_nr, op_key(e.name)) in bn_ops]
        else:
            backward = [e for e in events if e.name in backward_names]
        grouped[(group, "bwd")] = outermost(backward)
    return grouped


def group_times(events, device_type: str) -> dict:
    """{(group, part): {"us": time, "calls": n}}; time is CPU time on the CPU, kernel time on CUDA."""
    def duration(event):
        return event.device_time_total if device_type == "cuda" else event.time_range.elapsed_us()

    return {key: {"us": sum(duration(e) for e in found), "calls": len(found)}
            for key, found in group_events(events).items()}


def profile_once(runner, mode: str) -> dict:
    """{"wall_s", "groups"} of one profiled training step ("train") or inference ("infer")."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if runner.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with labelled_frozen_bn(runner.model), torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        runner.train_step() if mode == "train" else runner.inference()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "groups": group_times(prof.events(), runner.device.type)}


def profile_interleaved(runners: dict, steps: int, unrecorded: int = 1) -> dict:
    """{name: {mode: {"wall_s", "groups", "shares"}}}: `unrecorded` profiled training steps
    and inferences per variant first (on the CPU the profiler's own allocations grow the
    heap), then `steps` recorded ones, interleaved; the median of each time, and the
    shares of the median wall time ("norm_act": NORM_ACT's groups together)."""
    runs = {name: {"train": [], "infer": []} for name in runners}
    for step in range(unrecorded + steps):
        for name in (list(runners) if step % 2 else list(runners)[::-1]):
            for mode in ("train", "infer"):
                run = profile_once(runners[name], mode)
                if step >= unrecorded:
                    runs[name][mode].append(run)
    return {name: {mode: merged(found) for mode, found in modes.items()} for name, modes in runs.items()}


def merged(runs) -> dict:
    wall = statistics.median(run["wall_s"] for run in runs)
    groups = {key: {"us": statistics.median(run["groups"][key]["us"] for run in runs),
                    "calls": max(run["groups"][key]["calls"] for run in runs)} for key in runs[0]["groups"]}
    shares = {f"{group}_{part}": value["us"] / 1e6 / wall for (group, part), value in groups.items()}
    shares["norm_act"] = sum(shares[f"{group}_{part}"] for group in NORM_ACT for part in ("fwd", "bwd"))
    return {"wall_s": wall, "groups": groups, "shares": shares}
