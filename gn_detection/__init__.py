"""gn_detection: Group Normalization for detection and segmentation in detectron2.

The GroupNorm op (:mod:`gn_detection.layers`) needs only torch. Everything else
(config keys, backbones, heads, training) is built on detectron2: when
detectron2 is installed, importing this package registers the GN backbones and
RoI heads with detectron2's registries; without it the op still imports, and
the detectron2 parts raise an ImportError that says what is missing.
"""

from gn_detection.layers import GroupNorm, convert_group_norm, group_norm

__version__ = "0.1.0"

__all__ = ["GroupNorm", "add_gn_config", "convert_group_norm", "group_norm"]

try:
    import detectron2  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != "detectron2":  # detectron2 is there but one of its own imports fails
        raise
    _DETECTRON2_MISSING = error
else:
    _DETECTRON2_MISSING = None
    from gn_detection.config import add_gn_config
    from gn_detection import modeling  # noqa: F401  (import registers the backbones and RoI heads)

# Names of this package that only exist with detectron2.
_NEEDS_DETECTRON2 = ("add_gn_config", "modeling", "config")


def __getattr__(name):
    if _DETECTRON2_MISSING is not None and name in _NEEDS_DETECTRON2:
        raise ImportError(
            f"gn_detection.{name} needs detectron2, which is not installed ({_DETECTRON2_MISSING}). "
            "Install it with `make setup` (tools/install_detectron2.sh); the GroupNorm op "
            "(gn_detection.layers: GroupNorm, group_norm, convert_group_norm) works without it."
        )
    raise AttributeError(f"module 'gn_detection' has no attribute {name!r}")
