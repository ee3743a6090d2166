"""Benchmark machinery behind ``tools/benchmark_gn.py`` (the GroupNorm op against
PyTorch's) and ``tools/benchmark_model.py`` (GN Mask R-CNN against detectron2's GN
model and BN*).

- ``host``: the CPU, the allocator setting, other processes' load, page faults, memory.
- ``timing``: interleaved side-by-side timing on the CPU; CUDA-event timing with
  the L2 cache flushed between calls.
- ``op``: the op benchmark's shapes, byte model and rows (imports no detectron2).
- ``model``, ``profile_share``, ``memory``: the Mask R-CNN benchmark (needs detectron2).
"""
