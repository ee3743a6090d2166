"""The ONNX Runtime benchmark (gn_detection.benchmark.onnx_inference, behind
tools/benchmark_onnx.py), shortened: it checks the three variants agree, then times
them interleaved and reports medians and ratios (no speed is asserted)."""

from gn_detection.benchmark import onnx_inference


def test_time_calls_interleaves_and_rows_give_ratios():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in onnx_inference.VARIANTS}
    samples = onnx_inference.time_calls(fns, reps=2, warmup=1, max_wait=0)
    assert calls[:3] == list(fns) and sorted(calls[3:6]) == sorted(fns) and calls[3:6] != calls[6:9]
    assert all(len(s["seconds"]) == 2 for s in samples.values())
    table = onnx_inference.rows(samples)
    assert table["eager_ours"]["vs_eager_ours"] == 1.0 and table["eager_d2"]["vs_eager_d2"] == 1.0


def test_features_part_runs_and_agrees():
    lines = []
    results = onnx_inference.run(parts=("features",), height=64, width=64, batch=1, reps=1, warmup=0,
                                 allocator="default", max_wait=0, printer=lines.append)  # fmt: skip
    notes = results["features"]["notes"]
    assert notes["graph"].startswith("opset 21, 61 GroupNormalization nodes")
    assert notes["(c) vs (a)"].startswith("max |difference|") and notes["(a) vs (b)"].startswith("max |difference|")
    assert set(results["features"]["rows"]) == set(onnx_inference.VARIANTS)
    assert any("(c) ONNX Runtime, export of (a)" in line for line in lines)
