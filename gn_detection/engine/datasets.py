"""Datasets named on the command line (``--dataset NAME ANNOTATIONS.json IMAGE_DIR``)
and the number of classes they imply.

``tools/train_net.py`` and ``tools/predict.py`` register each ``--dataset`` as a
COCO-format instances dataset (every file and record checked when it is first
loaded, see :mod:`gn_detection.data.coco_checked`), so that ``DATASETS.TRAIN``
and ``DATASETS.TEST`` can name it. Registration happens in every process of a
multi-process run: detectron2's ``launch`` starts fresh interpreters.

Number of classes: the datasets a run uses (``DATASETS.TRAIN`` and
``DATASETS.TEST`` for training, ``DATASETS.TEST`` for evaluation and prediction)
must all have the same class names. ``MODEL.ROI_HEADS.NUM_CLASSES`` given on the
command line must equal their number (else a ``DatasetError`` before anything is
built); left at the config file's value, it is set to their number (logged when
that changes it).
"""

import os
from typing import List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from gn_detection.data.coco_checked import DatasetError, register_coco_dataset

NUM_CLASSES_KEY = "MODEL.ROI_HEADS.NUM_CLASSES"


def add_dataset_argument(parser) -> None:
    """Adds the repeatable ``--dataset NAME ANNOTATIONS.json IMAGE_DIR`` to ``parser``."""
    parser.add_argument(
        "--dataset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "ANNOTATIONS.json", "IMAGE_DIR"),
        help="register a COCO-format instances dataset as NAME, for DATASETS.TRAIN/DATASETS.TEST (repeatable)",
    )


def register_datasets(entries: Sequence[Sequence[str]]) -> None:
    """Registers each (name, annotation file, image folder) of ``--dataset``."""
    for name, json_file, image_root in entries:
        if not os.path.isdir(image_root):
            raise DatasetError(f"--dataset {name}: image folder {image_root} does not exist")
        register_coco_dataset(name, os.path.abspath(json_file), os.path.abspath(image_root))


def dataset_classes(names: Sequence[str]) -> Optional[List[str]]:
    """The class names shared by the registered datasets among ``names`` that
    declare classes (None when none does); different names are a ``DatasetError``."""
    known = [name for name in names if name in DatasetCatalog.list() and MetadataCatalog.get(name).get("thing_classes")]
    if not known:
        return None
    classes = list(MetadataCatalog.get(known[0]).thing_classes)
    for name in known[1:]:
        other = list(MetadataCatalog.get(name).thing_classes)
        if other != classes:
            raise DatasetError(
                f"datasets {known[0]!r} and {name!r} have different classes ({len(classes)}: {classes[:5]}... "
                f"vs {len(other)}: {other[:5]}...); one model needs the same classes in all of its datasets"
            )
    return classes


def set_num_classes(cfg, dataset_names: Sequence[str], from_command_line: bool) -> Optional[str]:
    """Checks or sets ``MODEL.ROI_HEADS.NUM_CLASSES`` of the unfrozen ``cfg`` from
    the classes of ``dataset_names`` (see the module docstring); returns the line
    to log when it changed the value."""
    classes = dataset_classes(dataset_names)
    if classes is None or cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(classes):
        return None
    if from_command_line:
        raise DatasetError(
            f"{NUM_CLASSES_KEY} {cfg.MODEL.ROI_HEADS.NUM_CLASSES} was given, but the datasets "
            f"{', '.join(dataset_names)} have {len(classes)} classes; give {len(classes)} or leave the key out"
        )
    message = (f"{NUM_CLASSES_KEY} set to {len(classes)}, the number of classes of {', '.join(dataset_names)} "
               f"(the config file has {cfg.MODEL.ROI_HEADS.NUM_CLASSES})")  # fmt: skip
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    return message


def prepare_datasets(cfg, entries: Sequence[Sequence[str]], opts: Sequence[str], training: bool) -> Optional[str]:
    """Registers ``--dataset`` entries and sets the number of classes of ``cfg``
    (unfrozen) from the datasets it trains (when ``training``) and tests on;
    returns :func:`set_num_classes`'s line to log."""
    register_datasets(entries)
    names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST] if training else list(cfg.DATASETS.TEST)
    return set_num_classes(cfg, names, from_command_line=NUM_CLASSES_KEY in list(opts)[::2])
