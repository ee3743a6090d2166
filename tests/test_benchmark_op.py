"""The op benchmark's machinery (gn_detection.benchmark.op and .timing): the byte
model, what each timed function computes, the interleaving, the rows' arithmetic,
and the commands' refusal of a CUDA device that is not there. No speed is asserted."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gn_detection.benchmark import op, timing

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_byte_model_counts_tensor_sized_passes(dtype):
    shape = (2, 64, 5, 7)
    size = torch.empty(shape, dtype=dtype).nbytes
    assert op.traffic_bytes("cpu", "fwd", shape, dtype) == 2 * size
    assert op.traffic_bytes("cpu", "fwd+bwd", shape, dtype) == 5 * size
    assert op.traffic_bytes("cuda", "fwd", shape, dtype) == 3 * size
    assert op.traffic_bytes("cuda", "fwd+bwd", shape, dtype) == 5 * size
    assert op.traffic_bytes("cuda", "copy", shape, dtype) == 2 * size
    with pytest.raises(ValueError, match="no byte model"):
        op.traffic_bytes("cuda", "add", shape, dtype)


@pytest.mark.parametrize("fmt", list(op.FORMATS))
@pytest.mark.parametrize("name", op.OPS)
def test_timed_functions_compute_the_op_in_both_implementations(name, fmt):
    """Ours and torch's timed passes give the same outputs and gradients, and the
    gn+relu rows are GroupNorm followed by ReLU (against float64 PyTorch)."""
    torch.manual_seed(0)
    tensors = op.make_tensors((3, 64, 6, 5), op.FORMATS[fmt])
    x, weight, bias = tensors["plain"]
    expected = F.group_norm(x.double(), op.GROUPS, weight.double(), bias.double())
    expected = expected.relu() if name == "gn+relu" else expected
    results = {}
    for impl in ("ours", "torch"):
        close = {"rtol": 1e-5, "atol": 1e-5}
        torch.testing.assert_close(op.make_callable(impl, name, "fwd", tensors)().double(), expected, **close)
        y, grads = op.make_callable(impl, name, "fwd+bwd", tensors)()
        torch.testing.assert_close(y.double(), expected, **close)
        results[impl] = grads
    for ours, theirs in zip(results["ours"], results["torch"]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_broken_op_is_not_benchmarked(monkeypatch):
    tensors = op.make_tensors((2, 64, 4, 4), torch.contiguous_format)
    real = op.forward_fn
    monkeypatch.setattr(op, "forward_fn", lambda impl, name: (lambda x, w, b: real(impl, name)(x, w, b) + 0.01)
                        if impl == "ours" else real(impl, name))
    with pytest.raises(SystemExit, match="disagree"):
        op.check_agreement(tensors, "gn")


def test_cpu_rows_are_consistent_with_their_samples():
    rows = op.measure_shape_cpu("small", "channels_last", reps=2, target_seconds=1e-4)
    assert [(r["op"], r["pass"]) for r in rows] == [(o, p) for o in op.OPS for p in op.PASSES]
    for row in rows:
        traffic = op.traffic_bytes("cpu", row["pass"], op.SHAPES["small"])
        assert row["shape"] == list(op.SHAPES["small"]) and row["dtype"] == "float32"
        assert math.isclose(row["ours_gbs"], traffic / row["ours_ms"] / 1e6)
        assert math.isclose(row["torch_gbs"], traffic / row["torch_ms"] / 1e6)
        assert row["speedup"] > 0 and row["floor_speedup"] > 0 and row["copy_gbs"] > 0


def test_cuda_rows_put_the_byte_model_beside_the_copy(monkeypatch):
    """measure_shape_cuda's arithmetic, with its CUDA-event timer replaced by one that
    calls every function (on CPU tensors) and returns fixed per-call times."""
    times = {"copy": 1e-3, ("ours", "gn", "fwd"): 2e-3, ("torch", "gn", "fwd"): 3e-3}

    def fake_timer(fns, reps, device):
        for fn in fns.values():
            fn()
        return {name: [times.get(name, 4e-3)] * reps for name in fns}

    monkeypatch.setattr(op, "time_cuda_interleaved", fake_timer)
    rows = op.measure_shape_cuda("small", "channels_last", torch.float32, reps=30, device="cpu")
    assert len(rows) == len(op.OPS) * len(op.PASSES)
    size = torch.empty(op.SHAPES["small"]).nbytes
    row = rows[0]
    assert (row["op"], row["pass"], row["dtype"]) == ("gn", "fwd", "float32")
    assert row["speedup"] == pytest.approx(1.5) and row["copy_gbs"] == pytest.approx(2 * size / 1e-3 / 1e9)
    assert row["ours_of_copy"] == pytest.approx((3 * size / 2e-3) / (2 * size / 1e-3))
    assert row["torch_of_copy"] == pytest.approx((3 * size / 3e-3) / (2 * size / 1e-3))
    assert rows[1]["ours_of_copy"] == pytest.approx((5 * size / 4e-3) / (2 * size / 1e-3))


def test_geometric_means_per_row_set_and_dtype():
    def row(dtype, name, fmt, pass_name, speedup):
        return {"dtype": dtype, "op": name, "format": fmt, "pass": pass_name, "speedup": speedup}

    rows = [row("float32", "gn", "channels_last", "fwd+bwd", 2.0), row("float32", "gn", "channels_last", "fwd", 8.0),
            row("float32", "gn+relu", "contiguous", "fwd+bwd", 3.0), row("bfloat16", "gn", "contiguous", "fwd", 0.5)]
    means = op.summarize(rows)
    assert means["float32 all rows"] == pytest.approx((2 * 8 * 3) ** (1 / 3))
    assert means["float32 gn channels_last"] == pytest.approx(4.0)
    assert means["float32 gn channels_last fwd+bwd"] == pytest.approx(2.0)
    assert means["float32 gn+relu fwd+bwd"] == pytest.approx(3.0)
    assert means["bfloat16 all rows"] == pytest.approx(0.5)
    assert set(op.summarize(rows[:3])) == set(op.SUMMARY_SETS)  # one dtype: no prefix


def test_interleaving_rotates_and_alternates_the_order():
    names = ["a", "b", "c"]
    orders = [timing.rotated_order(names, rep) for rep in range(6)]
    assert orders[:4] == [list("abc"), list("acb"), list("cab"), list("cba")]
    for name in names:  # every function runs first, and last, in some repetition
        assert any(o[0] == name for o in orders) and any(o[-1] == name for o in orders)
    calls = []
    samples = timing.time_interleaved({n: (lambda n=n: calls.append(n)) for n in names}, reps=4, target_seconds=0)
    assert {n: len(s) for n, s in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for s in samples.values() for t in s)


def test_in_turn_calls_each_function_in_turn_and_keeps_its_result():
    made = []
    call = timing.in_turn([lambda k=k: made.append(k) or k for k in range(3)])
    for _ in range(4):
        call()
    assert made == [0, 1, 2, 0]


def test_l2_flush_buffer_outgrows_the_cache():
    assert timing.l2_flush_bytes(60 << 20) == 120 << 20
    assert timing.l2_flush_bytes(0) == 256 << 20  # size not reported


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a CUDA device, and one is visible")
@pytest.mark.parametrize("script", ["benchmark_gn.py", "benchmark_model.py"])
def test_commands_refuse_a_missing_cuda_device(script):
    done = subprocess.run([sys.executable, str(REPO / "tools" / script), "--device", "cuda"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "no CUDA device" in done.stderr


def test_cuda_median_needs_thirty_repetitions():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark_gn.py"), "--device", "cuda", "--reps", "5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "at least 30" in done.stderr
