"""Devices the op tests run on: the CPU always, CUDA where a GPU is visible.

Tests take the ``device`` fixture (tests/conftest.py), parametrized over
``DEVICES``; CUDA-only checks (streams, run-to-run equality) use
``requires_cuda``. Without a GPU every CUDA case is skipped with the reason
"no CUDA device".
"""

import pytest
import torch

NO_CUDA = "no CUDA device"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda, id="cuda")]
