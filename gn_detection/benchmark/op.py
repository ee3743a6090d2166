"""The GroupNorm op benchmark: ours against ``torch.nn.functional.group_norm`` ("gn")
and the fused GroupNorm+ReLU against group_norm then relu_ ("gn+relu"), each as
forward alone and forward+backward, on the Mask R-CNN shapes, timed side by side
with a copy of the same tensor (the bandwidth a streaming kernel can hope for).

Byte model (the traffic counted for a pass, the same for both implementations;
parameters and statistics neglected; S = the input tensor's bytes):
  cpu   fwd 2S (read x, write y); fwd+bwd 5S (+ read dy and x, write dx);
        copy 2S into a preallocated buffer; add 3S (read x and dy, write).
  cuda  fwd 3S (a statistics read of x, then read x and write y: one pass cannot
        hold a tensor larger than L2); fwd+bwd 5S; copy 2S.
"""

import math
import statistics

import torch
import torch.nn.functional as F

from gn_detection.benchmark.timing import (
    geomean,
    in_turn,
    median_ratio,
    tensor_sets,
    time_cuda_interleaved,
    time_interleaved,
)
from gn_detection.layers import group_norm

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
OPS = ["gn", "gn+relu"]
BYTE_MODEL = {"cpu": {"fwd": 2, "fwd+bwd": 5, "copy": 2, "add": 3}, "cuda": {"fwd": 3, "fwd+bwd": 5, "copy": 2}}
PASSES = ["fwd", "fwd+bwd"]
# Largest |ours - torch| of a forward that is not a broken op (bfloat16: 3 units in the last place at 4).
AGREEMENT = {torch.float32: 1e-3, torch.bfloat16: 0.1, torch.float16: 1e-2}


def tensor_bytes(shape, dtype=torch.float32) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def traffic_bytes(device_type: str, pass_name: str, shape, dtype=torch.float32) -> int:
    """Bytes the byte model counts for one pass ("fwd", "fwd+bwd", "copy", "add") over `shape`."""
    if device_type not in BYTE_MODEL or pass_name not in BYTE_MODEL[device_type]:
        raise ValueError(f"no byte model for device {device_type!r} and pass {pass_name!r}")
    return BYTE_MODEL[device_type][pass_name] * tensor_bytes(shape, dtype)


def make_tensors(shape, memory_format, dtype=torch.float32, device="cpu"):
    """x, weight, bias, dy and a copy buffer; x/weight/bias in a no-grad and a requires-grad version.
    Weight and bias are in x's dtype (PyTorch's CUDA group_norm takes no other)."""
    x = torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=memory_format)
    weight = 1 + 0.1 * torch.randn(shape[1], dtype=dtype, device=device)
    bias = 0.1 * torch.randn(shape[1], dtype=dtype, device=device)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    return {
        "plain": (x, weight, bias),
        "leaves": leaves,
        "dy": torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=memory_format),
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


def check_agreement(tensors, op: str) -> None:
    """Stops when ours and torch's forwards disagree, so a broken op is not benchmarked."""
    x, w, b = tensors["plain"]
    difference = (forward_fn("ours", op)(x, w, b).float() - forward_fn("torch", op)(x, w, b).float()).abs().max()
    if not difference.item() < AGREEMENT[x.dtype]:
        raise SystemExit(f"ours and torch disagree on {list(x.shape)} {x.dtype} {op}: max |diff| {difference:.3g}")


def pass_functions(sets) -> dict:
    """{(impl, op, pass): function} over the tensor sets (called in turn)."""
    return {(impl, op, pass_name): in_turn([make_callable(impl, op, pass_name, t) for t in sets])
            for op in OPS for pass_name in PASSES for impl in ("ours", "torch")}


def base_row(shape_name, fmt, dtype, op, pass_name, ours, theirs, device_type) -> dict:
    shape = SHAPES[shape_name]
    traffic = traffic_bytes(device_type, pass_name, shape, dtype)
    return {
        "shape_name": shape_name, "shape": list(shape), "format": fmt, "dtype": str(dtype).replace("torch.", ""),
        "op": op, "pass": pass_name,
        "torch_ms": statistics.median(theirs) * 1e3,
        "ours_ms": statistics.median(ours) * 1e3,
        "speedup": median_ratio(theirs, ours),
        "ours_gbs": traffic / statistics.median(ours) / 1e9,
        "torch_gbs": traffic / statistics.median(theirs) / 1e9,
    }


def measure_shape_cpu(shape_name, fmt, reps, target_seconds, cold=False) -> list:
    """All rows of one shape and memory format on the CPU (float32), timed in one
    interleaved batch with a copy and an add of the same tensors: "at floor" is
    torch's time over the copy's (fwd) or the copy's plus the add's (fwd+bwd), the
    speed-up of a GroupNorm as fast as PyTorch's own elementwise ops moving those bytes."""
    shape = SHAPES[shape_name]
    sets = [make_tensors(shape, FORMATS[fmt]) for _ in range(tensor_sets(tensor_bytes(shape), cold))]
    for op in OPS:
        check_agreement(sets[0], op)
    fns = {
        "copy": in_turn([lambda t=t: t["buffer"].copy_(t["plain"][0]) for t in sets]),
        "add": in_turn([lambda t=t: torch.add(t["plain"][0], t["dy"], out=t["buffer"]) for t in sets]),
    }
    fns.update(pass_functions(sets))
    samples = time_interleaved(fns, reps, target_seconds, warmup_calls=max(3, len(sets)))
    copy_gbs = traffic_bytes("cpu", "copy", shape) / statistics.median(samples["copy"]) / 1e9
    floors = {"fwd": samples["copy"], "fwd+bwd": [c + a for c, a in zip(samples["copy"], samples["add"])]}
    rows = []
    for op in OPS:
        for pass_name in PASSES:
            ours, theirs = samples[("ours", op, pass_name)], samples[("torch", op, pass_name)]
            row = base_row(shape_name, fmt, torch.float32, op, pass_name, ours, theirs, "cpu")
            row.update(copy_gbs=copy_gbs, floor_ms=statistics.median(floors[pass_name]) * 1e3,
                       floor_speedup=median_ratio(theirs, floors[pass_name]), tensor_sets=len(sets))
            rows.append(row)
    return rows


def measure_shape_cuda(shape_name, fmt, dtype, reps, device) -> list:
    """All rows of one shape, memory format and dtype on a CUDA device, timed in one
    interleaved batch (time_cuda_interleaved) with a copy of the same tensor into a
    preallocated buffer; "of copy" is a pass's bandwidth under the byte model over the copy's."""
    shape = SHAPES[shape_name]
    tensors = make_tensors(shape, FORMATS[fmt], dtype, device)
    for op in OPS:
        check_agreement(tensors, op)
    fns = {"copy": lambda: tensors["buffer"].copy_(tensors["plain"][0])}
    fns.update(pass_functions([tensors]))
    samples = time_cuda_interleaved(fns, reps, device)
    copy_s = statistics.median(samples["copy"])
    copy_gbs = traffic_bytes("cuda", "copy", shape, dtype) / copy_s / 1e9
    rows = []
    for op in OPS:
        for pass_name in PASSES:
            row = base_row(shape_name, fmt, dtype, op, pass_name, samples[("ours", op, pass_name)],
                           samples[("torch", op, pass_name)], "cuda")
            row.update(copy_ms=copy_s * 1e3, copy_gbs=copy_gbs, ours_of_copy=row["ours_gbs"] / copy_gbs,
                       torch_of_copy=row["torch_gbs"] / copy_gbs)
            rows.append(row)
    return rows


# Row sets whose geometric-mean speed-up is reported.
SUMMARY_SETS = {
    "all rows": lambda r: True,
    "gn channels_last": lambda r: r["op"] == "gn" and r["format"] == "channels_last",
    "gn channels_last fwd+bwd": lambda r: r["op"] == "gn" and r["format"] == "channels_last" and r["pass"] == "fwd+bwd",
    "gn+relu fwd+bwd": lambda r: r["op"] == "gn+relu" and r["pass"] == "fwd+bwd",
}


def summarize(rows) -> dict:
    """{label: geometric mean of the rows' speed-ups} over SUMMARY_SETS, per dtype when
    the rows have several."""
    dtypes = sorted({r["dtype"] for r in rows})
    means = {}
    for dtype in dtypes:
        prefix = f"{dtype} " if len(dtypes) > 1 else ""
        for label, keep in SUMMARY_SETS.items():
            means[prefix + label] = geomean(r["speedup"] for r in rows if r["dtype"] == dtype and keep(r))
    return means
