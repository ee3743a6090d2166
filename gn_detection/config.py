"""Config keys of gn_detection, added to a detectron2 config by :func:`add_gn_config`."""

from detectron2.config import CfgNode as CN


def add_gn_config(cfg: CN) -> CN:
    """Adds ``MODEL.GN`` to ``cfg`` (in place) and returns ``cfg``.

    The keys say how every layer whose ``*.NORM`` is "GN", "LN" or "IN" is built:

    - ``NUM_GROUPS`` (32) and ``DIM_PER_GROUP`` (-1): the number of groups, or the
      channels per group; exactly one of them must be positive, as in Detectron.
      "LN" (one group) and "IN" (one channel per group) ignore both.
    - ``EPS`` (1e-5): added to the variance.
    - ``IMPL``: "custom" for gn_detection's op, "torch" for ``torch.nn.GroupNorm``
      (the reference, for comparisons).
    - ``FUSE_RELU`` (True): where a ReLU follows the norm, the custom op applies it
      in the same pass; ignored with ``IMPL: "torch"``.
    - ``ZERO_INIT_LAST_GAMMA`` (False): start the gamma of the last norm of each
      residual block at zero, so each block begins as the identity (the paper's
      ImageNet setting; pretrained weights overwrite it).
    """
    cfg.MODEL.GN = CN()
    cfg.MODEL.GN.NUM_GROUPS = 32
    cfg.MODEL.GN.DIM_PER_GROUP = -1
    cfg.MODEL.GN.EPS = 1e-5
    cfg.MODEL.GN.IMPL = "custom"
    cfg.MODEL.GN.FUSE_RELU = True
    cfg.MODEL.GN.ZERO_INIT_LAST_GAMMA = False
    return cfg
