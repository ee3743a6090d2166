"""The built-in shapes dataset: deterministic files, exact masks inside their
boxes, readable by pycocotools and detectron2, registered with its metadata."""

import filecmp
import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from gn_detection.data import (
    CATEGORIES,
    DatasetError,
    ShapesSpec,
    ensure_shapes_dataset,
    register_checked_coco_instances,
    register_shapes_dataset,
)
from gn_detection.data.shapes import generate_split

SPEC = ShapesSpec(num_train=24, num_val=6, image_size=96, empty_fraction=0.15, seed=3)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return ensure_shapes_dataset(str(tmp_path_factory.mktemp("shapes")), SPEC, printer=lambda line: None)


def annotations(root, split="train"):
    with open(os.path.join(root, "annotations", f"instances_{split}.json")) as f:
        return json.load(f)


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_same_seed_gives_byte_identical_files(dataset_root, tmp_path):
    again = ensure_shapes_dataset(str(tmp_path), SPEC, printer=lambda line: None)
    files = all_files(dataset_root)
    assert files == all_files(again) and len(files) == SPEC.num_train + SPEC.num_val + 3  # 2 JSON + marker
    match, mismatch, errors = filecmp.cmpfiles(dataset_root, again, files, shallow=False)
    assert mismatch == [] and errors == []


def test_another_seed_gives_other_images(dataset_root, tmp_path):
    other = ShapesSpec(num_train=SPEC.num_train, num_val=1, image_size=SPEC.image_size, seed=SPEC.seed + 1)
    generate_split(str(tmp_path), "train", other)
    assert not filecmp.cmp(os.path.join(dataset_root, "train", "000000.png"), tmp_path / "train" / "000000.png",
                           shallow=False)  # fmt: skip


def test_masks_are_exact_and_inside_their_boxes(dataset_root):
    data = annotations(dataset_root)
    assert data["annotations"]
    for annotation in data["annotations"]:
        mask = mask_util.decode(annotation["segmentation"])
        assert mask.shape == (SPEC.image_size, SPEC.image_size)
        ys, xs = np.nonzero(mask)
        x, y, w, h = annotation["bbox"]
        assert xs.min() == x and ys.min() == y and xs.max() + 1 == x + w and ys.max() + 1 == y + h
        assert annotation["area"] == mask.sum() > 0


def test_visible_masks_do_not_overlap_and_objects_occlude(dataset_root):
    """Each pixel belongs to at most one object, and some objects are partly hidden
    (their visible mask is not the full circle/square/triangle they were drawn as)."""
    data = annotations(dataset_root)
    occluded = 0
    for image in data["images"]:
        masks = [mask_util.decode(a["segmentation"]) for a in data["annotations"] if a["image_id"] == image["id"]]
        if masks:
            assert np.stack(masks).sum(axis=0).max() == 1
        occluded += sum(_looks_cut(mask) for mask in masks)
    assert occluded > 0


def _looks_cut(mask):
    """Whether a visible mask lost part of its convex outline (rings aside, shapes are convex)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    return len(contours) > 1 or cv2.contourArea(hull) > 1.3 * mask.sum()


def test_images_vary_in_content_and_scale(dataset_root):
    data = annotations(dataset_root)
    per_image = [sum(a["image_id"] == image["id"] for a in data["annotations"]) for image in data["images"]]
    assert 0 in per_image and max(per_image) >= 3
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, len(CATEGORIES) + 1))
    sides = [max(a["bbox"][2:]) / SPEC.image_size for a in data["annotations"]]
    assert min(sides) < 0.2 and max(sides) > 0.4


def test_pycocotools_and_detectron2_read_it(dataset_root):
    json_file = os.path.join(dataset_root, "annotations", "instances_val.json")
    coco = COCO(json_file)
    assert len(coco.getImgIds()) == SPEC.num_val
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(CATEGORIES)
    records = load_coco_json(json_file, os.path.join(dataset_root, "val"))
    assert len(records) == SPEC.num_val
    assert sum(len(r["annotations"]) for r in records) == len(coco.getAnnIds())
    assert all(os.path.isfile(r["file_name"]) for r in records)


def test_registered_with_metadata(dataset_root):
    train, val = register_shapes_dataset(dataset_root, prefix="test_shapes")
    assert (train, val) == ("test_shapes_train", "test_shapes_val")
    metadata = MetadataCatalog.get(val)
    assert metadata.thing_classes == list(CATEGORIES)
    assert len(metadata.thing_colors) == len(CATEGORIES)
    assert metadata.evaluator_type == "coco"
    assert metadata.json_file == os.path.join(dataset_root, "annotations", "instances_val.json")
    assert len(DatasetCatalog.get(train)) == SPEC.num_train
    assert MetadataCatalog.get(train).thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(len(CATEGORIES))}
    register_shapes_dataset(dataset_root, prefix="test_shapes")  # same files again: allowed


def test_registration_to_other_files_is_refused_unless_replacing(dataset_root, tmp_path):
    json_file = os.path.join(dataset_root, "annotations", "instances_val.json")
    register_checked_coco_instances("test_other", json_file, dataset_root, CATEGORIES, [(0, 0, 0)] * 4)
    with pytest.raises(DatasetError, match=f"'test_other' is already registered with annotation file {json_file}"):
        register_checked_coco_instances("test_other", str(tmp_path / "b.json"), str(tmp_path), CATEGORIES, [])
    register_checked_coco_instances("test_other", str(tmp_path / "b.json"), str(tmp_path), CATEGORIES, [], replace=True)
    assert MetadataCatalog.get("test_other").json_file == str(tmp_path / "b.json")


def test_an_interrupted_generation_is_redone(tmp_path):
    spec = ShapesSpec(num_train=2, num_val=1, image_size=64)
    root = ensure_shapes_dataset(str(tmp_path), spec, printer=lambda line: None)
    os.remove(os.path.join(root, "done"))
    os.remove(os.path.join(root, "val", "000000.png"))
    lines = []
    ensure_shapes_dataset(str(tmp_path), spec, printer=lines.append)
    assert os.path.isfile(os.path.join(root, "val", "000000.png"))
    assert any("generating" in line for line in lines)


@pytest.mark.parametrize(
    "field, value", [("image_size", 16), ("num_train", 0), ("num_val", 0), ("max_objects", 0)]
)
def test_bad_parameters_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ShapesSpec(**{field: value})
