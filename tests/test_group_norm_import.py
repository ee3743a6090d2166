"""The op imports and runs in a Python without detectron2 (a GPU machine with
only torch), and the package's detectron2 parts then fail with a clear message.

detectron2 is made unimportable in a subprocess (None in sys.modules), whether
or not it is installed here.
"""

import subprocess
import sys

import pytest

_WITHOUT_DETECTRON2 = r"""
import sys
sys.modules["detectron2"] = None  # `import detectron2` now raises ModuleNotFoundError
import torch
import torch.nn.functional as F
import gn_detection
from gn_detection.layers import GroupNorm, convert_group_norm, cuda_compiled, group_norm

torch.manual_seed(0)
x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
weight, bias = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
assert torch.allclose(group_norm(x, 4, weight, bias), F.group_norm(x, 4, weight, bias), atol=1e-12)
converted = convert_group_norm(torch.nn.Sequential(torch.nn.GroupNorm(4, 8)).double())
assert isinstance(converted[0], GroupNorm)
assert gn_detection.GroupNorm is GroupNorm
assert isinstance(cuda_compiled(), bool)
loaded = sorted(name for name in sys.modules if name.startswith("gn_detection"))
assert "gn_detection.modeling" not in loaded and "gn_detection.config" not in loaded, loaded

for use in ("gn_detection.add_gn_config", "from gn_detection import modeling", "from gn_detection import config"):
    try:
        exec(use if use.startswith("from") else f"{use}(None)")
    except ImportError as error:
        message = str(error)
        assert "needs detectron2, which is not installed" in message and "make setup" in message, message
    else:
        raise AssertionError(f"{use} worked without detectron2")
print("ok")
"""


def test_op_imports_and_runs_without_detectron2():
    result = subprocess.run([sys.executable, "-c", _WITHOUT_DETECTRON2], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_import_registers_the_detectron2_parts_when_installed():
    """With detectron2, `import gn_detection` still registers the backbones and heads."""
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    import gn_detection
    from detectron2.modeling import BACKBONE_REGISTRY, ROI_BOX_HEAD_REGISTRY

    assert callable(gn_detection.add_gn_config)
    assert "build_resnet_fpn_gn_backbone" in BACKBONE_REGISTRY
    assert "FastRCNNConvFCGNHead" in ROI_BOX_HEAD_REGISTRY
