"""Every config under configs/ builds its model; the experiment files keep the
paper's and Detectron's conventions (solver, schedule, input, pretrained models),
say where each AP they quote comes from, and agree with MODEL_ZOO.md; Table 5's
two aliases are Table 6's configs exactly and are counted once."""

import re
from collections import Counter

import pytest
import torch
import yaml
from detectron2.checkpoint.catalog import ModelCatalog
from detectron2.modeling import build_model
from detection_helpers import CONFIGS, REPO, count_modules, load_config, shrink_for_cpu

from gn_detection import GroupNorm

ALL_FILES = sorted(str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml"))
# the paper's experiments; configs/demo/ holds the CPU demo (tested in test_demo.py)
EXPERIMENTS = [name for name in ALL_FILES if name.startswith("table")]


def _alias_target(name):
    """The config a file only renames (its one key is ``_BASE_``), else None."""
    keys = yaml.safe_load((CONFIGS / name).read_text())
    if set(keys) != {"_BASE_"}:
        return None
    return str((CONFIGS / name).parent.joinpath(keys["_BASE_"]).resolve().relative_to(CONFIGS.resolve()))


ALIASES = {name: target for name in ALL_FILES if (target := _alias_target(name))}
MODELS = [name for name in ALL_FILES if name not in ALIASES]
DISTINCT_EXPERIMENTS = [name for name in EXPERIMENTS if name not in ALIASES]
DETECTRON_PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
MODEL_ZOO_LINES = (REPO / "MODEL_ZOO.md").read_text().splitlines()

# "AP: box 38.6 (paper text), mask 34.2 (unconfirmed)." -- each figure names its source
SOURCE = r"\((?:Detectron README|paper text|unconfirmed)(?:: [^()]*)?\)"
AP_LINE = re.compile(rf"^# AP: box (\d\d\.\d) {SOURCE}, mask (?:\d\d\.\d {SOURCE}|not stated)\.(?: .*)?$", re.M)


def test_every_paper_table_has_its_configs_once():
    assert ALIASES == {
        "table5_fpn_heads/mask_rcnn_R_50_FPN_bn_frozen_2fc.yaml": "table6_fpn/mask_rcnn_R_50_FPN_bn_frozen_2x.yaml",
        "table5_fpn_heads/mask_rcnn_R_50_FPN_gn_all.yaml": "table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml",
    }
    tables = Counter(name.split("/")[0] for name in DISTINCT_EXPERIMENTS)
    assert tables == {"table4_c4": 3, "table5_fpn_heads": 3, "table6_fpn": 6, "table7_scratch": 2}
    assert len(MODELS) == 2 + len(DISTINCT_EXPERIMENTS) + 1  # two bases and the demo


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_merges_to_exactly_its_table6_config(alias):
    target = ALIASES[alias]
    assert load_config(CONFIGS / alias).dump() == load_config(CONFIGS / target).dump()
    header = (CONFIGS / alias).read_text().split("_BASE_")[0]
    assert "alias of Table 6" in " ".join(header.replace("#", " ").split())
    assert alias in (CONFIGS / target).read_text().split("_BASE_")[0]  # and the target names it


@pytest.mark.parametrize("name", MODELS)
def test_config_builds_its_model(name):
    cfg = shrink_for_cpu(load_config(CONFIGS / name))
    model = build_model(cfg)
    group_norms = count_modules(model, torch.nn.GroupNorm)
    assert count_modules(model, GroupNorm) == group_norms
    uses_gn = "GN" in (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM)
    assert (group_norms > 0) == (uses_gn or cfg.MODEL.RESNETS.NORM == "LN")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_header_names_table_and_source_of_each_ap(name):
    header = (CONFIGS / name).read_text().split("_BASE_")[0]
    table = re.search(r"Table (\d)", header)
    assert table and table.group(1) == name[len("table")]
    assert AP_LINE.search(header), f"{name}: no 'AP: box .. (source), mask ..' line"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_model_zoo_row_quotes_the_config(name):
    rows = [line for line in MODEL_ZOO_LINES if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"{name}: {len(rows)} rows in MODEL_ZOO.md"
    if name in ALIASES:  # counted once: the row points at the Table 6 config, with no AP of its own
        assert f"`{ALIASES[name]}`" in rows[0]
        return
    box_ap = AP_LINE.search((CONFIGS / name).read_text()).group(1)
    assert f" {box_ap}" in rows[0]


@pytest.mark.parametrize("name", DISTINCT_EXPERIMENTS)
def test_solver_and_input_follow_detectron(name):
    cfg = load_config(CONFIGS / name)
    if name.startswith("table4_c4/"):  # Detectron's C4 2x: 8 GPUs x 1 image
        batch, base_lr, schedule = 8, 0.01, (360000, (240000, 320000))
    elif name.endswith("_3x.yaml"):  # Detectron's GN runs: 8 GPUs x 2 images
        batch, base_lr, schedule = 16, 0.02, (270000, (210000, 250000))
    else:
        batch, base_lr, schedule = 16, 0.02, (180000, (120000, 160000))
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (batch, base_lr)
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == schedule
    assert cfg.SOLVER.WARMUP_METHOD == "linear" and cfg.SOLVER.WARMUP_ITERS == 500
    assert cfg.SOLVER.WARMUP_FACTOR == pytest.approx(1 / 3)
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4 and cfg.SOLVER.WEIGHT_DECAY_NORM == 0.0
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.INPUT.MAX_SIZE_TEST == 1333
    assert cfg.MODEL.PIXEL_MEAN == DETECTRON_PIXEL_MEAN and cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0]
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)


@pytest.mark.parametrize("name", DISTINCT_EXPERIMENTS)
def test_pretrained_model_conventions(name):
    cfg = load_config(CONFIGS / name)
    weights = cfg.MODEL.WEIGHTS
    if name.startswith("table7_scratch/"):
        assert weights == "" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
        assert "FrozenBN" not in (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM)
        return
    assert weights.startswith("catalog://") and ModelCatalog.get(weights[len("catalog://") :]).endswith(".pkl")
    if weights.endswith("-GN"):  # the GN ImageNet models have their stride in the 3x3 conv
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.MODEL.RESNETS.NORM in ("GN", "LN")
        assert weights.endswith(f"R-{cfg.MODEL.RESNETS.DEPTH}-GN")
    else:  # MSRA's BN models have it in the 1x1 conv
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True and cfg.MODEL.RESNETS.NORM == "FrozenBN"
        assert weights.endswith(f"MSRA/R-{cfg.MODEL.RESNETS.DEPTH}")
