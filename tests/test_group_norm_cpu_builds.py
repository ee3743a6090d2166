"""Every build of the CPU kernels (baseline x86-64, AVX2, AVX-512) computes the
same results as the float64 reference.

The process picks one build at first use, capped by the GN_CPU_CAPABILITY
environment variable, so each build is checked in a subprocess of its own.
"""

import json
import os
import subprocess
import sys

import pytest

_CHECK = r"""
import json, torch, torch.nn.functional as F
import gn_detection.layers as L
torch.manual_seed(0)
worst = {}
cases = [((2, 64, 17, 23), 32, "contiguous"), ((2, 64, 17, 23), 32, "channels_last"),
         ((64, 256, 7, 7), 32, "contiguous"), ((3, 32, 5, 6, 7), 4, "channels_last_3d"), ((5, 40), 8, "contiguous"),
         # outputs of 16 MiB and more are written with streaming stores; channels-first
         # ones in vectors that several channels (HxW 66 and 5) and tasks share
         ((2, 64, 200, 200), 32, "contiguous"), ((2, 64, 200, 200), 32, "channels_last"),
         ((1000, 64, 3, 22), 32, "contiguous"), ((6600, 128, 5), 32, "contiguous")]
for shape, groups, fmt in cases:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for relu in (False, True):
            x = (torch.randn(shape, dtype=torch.float64) * 2 + 3).to(dtype)
            if fmt != "contiguous":
                x = x.to(memory_format=getattr(torch, fmt))
            w = torch.randn(shape[1], dtype=dtype)
            b = torch.randn(shape[1], dtype=dtype)
            dy = torch.randn(shape, dtype=dtype)
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            y = L.group_norm(*leaves[:1], groups, leaves[1], leaves[2], activation="relu" if relu else None)
            grads = torch.autograd.grad(y, leaves, dy)
            ref_leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
            y64 = F.group_norm(ref_leaves[0], groups, ref_leaves[1], ref_leaves[2])
            y64 = torch.relu(y64) if relu else y64
            ref_grads = torch.autograd.grad(y64, ref_leaves, dy.double())
            for name, a, r in zip(("y", "dx", "dw", "db"), (y, *grads), (y64, *ref_grads)):
                err = ((a.double() - r).abs().max() / r.abs().max().clamp_min(1)).item()
                key = f"{dtype}"
                worst[key] = max(worst.get(key, 0.0), err)
print(json.dumps(worst))
"""

# Largest error relative to the tensor's scale: float32 and float64 round at
# ~1e-7 and ~1e-16 per operation; bfloat16 outputs and gradients are rounded to
# an 8-bit mantissa (2^-8 = 3.9e-3), and the ReLU mask of a rounded input may
# flip for values next to zero, so bfloat16 gets a few of its ulps.
_TOLERANCE = {"torch.float32": 1e-4, "torch.float64": 1e-10, "torch.bfloat16": 3e-2}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_REQUIRES = {"baseline": set(), "avx2": {"avx2", "fma", "f16c"}, "avx512": {"avx512f", "avx512bw", "avx512vl"}}


@pytest.mark.parametrize("capability", ["baseline", "avx2", "avx512"])
def test_cpu_build_matches_float64_reference(capability):
    if not _REQUIRES[capability] <= _cpu_flags():
        pytest.skip(f"this processor lacks {capability}")
    env = dict(os.environ, GN_CPU_CAPABILITY=capability)
    result = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, check=True)
    worst = json.loads(result.stdout.strip().splitlines()[-1])
    for dtype, err in worst.items():
        assert err <= _TOLERANCE[dtype], f"{capability} build, {dtype}: max relative error {err:.3g}"


_UNKNOWN_CAPABILITY = r"""
import torch, gn_detection.layers as L
for attempt in range(2):  # the choice of build is retried, and fails again, on every call
    try:
        L.group_norm(torch.randn(2, 4, 3, 3), 2)
    except ValueError as error:
        print(error)
    else:
        print("no error")
"""


def test_unknown_capability_is_an_error_that_lists_the_builds():
    """A GN_CPU_CAPABILITY the kernels do not know (a typo) fails with the valid
    names, instead of silently running another build."""
    env = dict(os.environ, GN_CPU_CAPABILITY="avx3")
    result = subprocess.run([sys.executable, "-c", _UNKNOWN_CAPABILITY], env=env, capture_output=True, text=True,
                            check=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, result.stdout
    for line in lines:
        assert "GN_CPU_CAPABILITY=avx3 names no build of the CPU kernels" in line, line
        assert "use one of baseline, avx2, avx512" in line, line
