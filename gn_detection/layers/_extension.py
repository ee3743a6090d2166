"""Loads the compiled extension ``gn_detection._C`` (which registers the
``torch.ops.gn_detection`` ops) and the fake kernels that tracing needs."""

import torch  # noqa: F401  (loads libtorch and libc10, which _C links against)

try:
    from gn_detection import _C  # noqa: F401  (import registers the ops)
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "gn_detection._C, the compiled GroupNorm op, is not built or does not load "
        f"({error}). Build it with `make build` or "
        "`pip install --no-build-isolation -e .` from the repository root."
    ) from error

from gn_detection.layers import _fake_kernels  # noqa: F401,E402  (import registers fake kernels)


def cuda_compiled() -> bool:
    """Whether the extension was built with its CUDA kernels."""
    return bool(_C.WITH_CUDA)
