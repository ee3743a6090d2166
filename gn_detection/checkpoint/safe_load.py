"""Loading checkpoint files without running code from them.

- ``.pth`` files go through ``torch.load(weights_only=True)``: tensors and plain
  containers only.
- Pickles (``.pkl``: Detectron and detectron2 model files) go through
  :class:`ArrayUnpickler`, which resolves only the globals that numpy arrays,
  numpy scalars and builtin containers need; a pickle that names any other
  global (``os.system``, a class, ...) is refused before anything is called.

Every failure is a :class:`CheckpointError` whose message names the file, so a
truncated download or a wrong path reads as such instead of as a traceback from
inside pickle or torch.
"""

import os
import pickle
from typing import Any

import numpy as np
import torch

# (module, name) pairs a pickle of arrays and containers may import. Python 2
# pickles (Detectron's) name the builtins module "__builtin__"; numpy 1 pickles
# use numpy.core, numpy 2 pickles numpy._core.
_NUMPY_GLOBALS = [
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
]
_CONTAINERS = ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float", "bool")
ALLOWED_GLOBALS = frozenset(
    _NUMPY_GLOBALS
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict")]
    + [(builtins, name) for builtins in ("builtins", "__builtin__") for name in _CONTAINERS]
)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (missing, truncated, corrupt, wrong content)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would import something other than arrays and containers."""


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file, filename: str, **kwargs):
        super().__init__(file, **kwargs)
        self.filename = filename

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeCheckpointError(
                f"{self.filename}: refusing to load this pickle: it imports the global "
                f"'{module}.{name}'; checkpoint pickles may contain only numpy arrays and "
                "plain containers (dict, list, tuple, str, numbers)"
            )
        return super().find_class(module, name)


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")


def load_pickle(path: str) -> Any:
    """Loads a pickle of arrays and containers (Python 2 pickles included)."""
    path = os.fspath(path)
    _check_readable(path)
    with open(path, "rb") as f:
        try:
            return ArrayUnpickler(f, path, encoding="latin1").load()
        except UnsafeCheckpointError:
            raise
        except Exception as error:  # EOFError, UnpicklingError, ValueError, ... from a damaged file
            raise CheckpointError(
                f"{path}: not a readable checkpoint pickle (truncated or corrupt?): {type(error).__name__}: {error}"
            ) from error


def load_torch(path: str) -> Any:
    """Loads a ``torch.save`` file with ``weights_only=True`` onto the CPU."""
    path = os.fspath(path)
    _check_readable(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "Weights only load failed" in str(error):  # torch refused a global: keep its explanation
            raise UnsafeCheckpointError(f"{path}: torch.load(weights_only=True) refused this file: {error}") from error
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {type(error).__name__}: {error}"
        ) from error


def load_checkpoint_file(path: str) -> Any:
    """:func:`load_pickle` for ``.pkl`` files, else :func:`load_torch`."""
    return load_pickle(path) if os.fspath(path).endswith(".pkl") else load_torch(path)


def save_detectron2_pickle(path: str, model: dict, author: str) -> None:
    """Writes ``{"model": {name: numpy array}, "__author__": author,
    "matching_heuristics": False}``: the detectron2 pickle format, loaded by
    exact names (``model`` values may be tensors or arrays)."""
    arrays = {}
    for name, value in model.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arrays[name] = np.ascontiguousarray(value)
    data = {"model": arrays, "__author__": author, "matching_heuristics": False}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        pickle.dump(data, f, protocol=4)
    os.replace(temporary, path)
