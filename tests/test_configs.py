"""Every config under configs/ builds its model, and the experiment files keep
the paper's conventions (solver, input, pretrained-model conventions, headers)."""

import re
from collections import Counter

import pytest
import torch
from detectron2.checkpoint.catalog import ModelCatalog
from detectron2.modeling import build_model
from detection_helpers import CONFIGS, count_modules, load_config, shrink_for_cpu

from gn_detection import GroupNorm

ALL_FILES = sorted(str(path.relative_to(CONFIGS)) for path in CONFIGS.rglob("*.yaml"))
# the paper's experiments; configs/demo/ holds the CPU demo (tested in test_demo.py)
EXPERIMENTS = [name for name in ALL_FILES if name.startswith("table")]
DETECTRON_PIXEL_MEAN = [102.9801, 115.9465, 122.7717]


def test_every_paper_table_has_its_configs():
    tables = Counter(name.split("/")[0] for name in EXPERIMENTS)
    assert tables == {"table4_c4": 3, "table5_fpn_heads": 5, "table6_fpn": 6, "table7_scratch": 2}
    assert len(ALL_FILES) == 2 + len(EXPERIMENTS) + 1  # two bases and the demo


@pytest.mark.parametrize("name", ALL_FILES)
def test_config_builds_its_model(name):
    cfg = shrink_for_cpu(load_config(CONFIGS / name))
    model = build_model(cfg)
    group_norms = count_modules(model, torch.nn.GroupNorm)
    assert count_modules(model, GroupNorm) == group_norms
    uses_gn = "GN" in (cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM, cfg.MODEL.ROI_BOX_HEAD.NORM)
    assert (group_norms > 0) == (uses_gn or cfg.MODEL.RESNETS.NORM == "LN")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_header_names_table_row_and_paper_ap(name):
    header = (CONFIGS / name).read_text().split("_BASE_")[0]
    table = re.search(r"Table (\d)", header)
    assert table and table.group(1) == name[len("table")]
    assert re.search(r"Paper AP: (box \d\d\.\d(, mask (\d\d\.\d|not stated))?|none known)", header)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_solver_and_input_follow_the_paper(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.02
    assert cfg.SOLVER.WEIGHT_DECAY == 1e-4 and cfg.SOLVER.WEIGHT_DECAY_NORM == 0.0
    assert cfg.SOLVER.WARMUP_ITERS > 0
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 1333
    assert cfg.INPUT.MIN_SIZE_TEST == 800 and cfg.INPUT.MAX_SIZE_TEST == 1333
    assert cfg.MODEL.PIXEL_MEAN == DETECTRON_PIXEL_MEAN and cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0]
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    expected_iterations = 270000 if name.endswith("_3x.yaml") else 180000
    assert cfg.SOLVER.MAX_ITER == expected_iterations and max(cfg.SOLVER.STEPS) < expected_iterations


@pytest.mark.parametrize("name", EXPERIMENTS)
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
