"""Bad COCO-format input stops with an error naming the file and the record,
before detectron2 would fail on it deep inside training."""

import json
import os
import re
import shutil

import pytest

from gn_detection.data import DatasetError, ShapesSpec, check_coco_dataset, load_checked_coco_json
from gn_detection.data.shapes import generate_split


@pytest.fixture()
def dataset(tmp_path):
    """A small valid val split: (json_file, image_root, parsed JSON)."""
    json_file = generate_split(str(tmp_path), "val", ShapesSpec(num_val=4, image_size=64, empty_fraction=0.0))
    with open(json_file) as f:
        return json_file, str(tmp_path / "val"), json.load(f)


def rewrite(json_file, data):
    with open(json_file, "w") as f:
        json.dump(data, f)


def test_a_valid_file_passes_and_loads(dataset):
    json_file, image_root, data = dataset
    assert check_coco_dataset(json_file, image_root) == (4, len(data["annotations"]))
    records = load_checked_coco_json(json_file, image_root)
    assert [len(r["annotations"]) for r in records] == [
        sum(a["image_id"] == image["id"] for a in data["annotations"]) for image in data["images"]
    ]


def test_missing_annotation_file(tmp_path):
    missing = str(tmp_path / "instances_val.json")
    with pytest.raises(DatasetError, match=re.escape(f"annotation file {missing} does not exist")):
        check_coco_dataset(missing, str(tmp_path))


@pytest.mark.parametrize("content", ['{"images": [', "\x00\xff garbage", "[1, 2]", '{"images": []}'])
def test_corrupt_annotation_file(dataset, content):
    json_file, image_root, _ = dataset
    with open(json_file, "w") as f:
        f.write(content)
    with pytest.raises(DatasetError, match=re.escape(f"annotation file {json_file}")):
        check_coco_dataset(json_file, image_root)


def test_listed_image_that_is_missing(dataset):
    json_file, image_root, data = dataset
    os.remove(os.path.join(image_root, "000002.png"))
    message = f"image record #2 (id 3, file_name '000002.png'): image file {image_root}/000002.png does not exist"
    with pytest.raises(DatasetError, match=re.escape(message)):
        check_coco_dataset(json_file, image_root)


def test_listed_image_that_cannot_be_read(dataset):
    json_file, image_root, _ = dataset
    with open(os.path.join(image_root, "000001.png"), "wb") as f:
        f.write(b"\x89PNG truncated")
    with pytest.raises(DatasetError, match=re.escape("image record #1 (id 2, file_name '000001.png')")):
        check_coco_dataset(json_file, image_root)


def test_image_whose_size_differs_from_its_record(dataset, tmp_path):
    json_file, image_root, data = dataset
    data["images"][0]["height"] = 80
    rewrite(json_file, data)
    with pytest.raises(DatasetError, match="record says 80x64 but image file .*000000.png is 64x64"):
        check_coco_dataset(json_file, image_root)


def test_annotation_with_undeclared_category(dataset):
    json_file, image_root, data = dataset
    data["annotations"][1]["category_id"] = 9
    annotation_id = data["annotations"][1]["id"]
    rewrite(json_file, data)
    message = (f"annotation file {json_file}: annotation record #1 (id {annotation_id}) has category_id 9, "
               "which is not among the declared categories [1, 2, 3, 4]")  # fmt: skip
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_checked_coco_json(json_file, image_root)


def test_annotation_of_undeclared_image(dataset):
    json_file, image_root, data = dataset
    data["annotations"][0]["image_id"] = 77
    rewrite(json_file, data)
    with pytest.raises(DatasetError, match=r"annotation record #0 .* refers to image_id 77, which no image record"):
        check_coco_dataset(json_file, image_root)


def test_records_that_lack_keys_and_repeated_ids(dataset, tmp_path):
    json_file, image_root, data = dataset
    broken = json.loads(json.dumps(data))
    del broken["annotations"][0]["bbox"]
    rewrite(json_file, broken)
    with pytest.raises(DatasetError, match="annotation record #0 lacks bbox"):
        check_coco_dataset(json_file, image_root)
    repeated = json.loads(json.dumps(data))
    repeated["images"][1]["id"] = repeated["images"][0]["id"]
    rewrite(json_file, repeated)
    with pytest.raises(DatasetError, match="image record #1 repeats image id 1"):
        check_coco_dataset(json_file, image_root)


def test_image_root_that_does_not_exist(dataset, tmp_path):
    json_file, image_root, _ = dataset
    shutil.rmtree(image_root)
    with pytest.raises(DatasetError, match="image file .*000000.png does not exist"):
        check_coco_dataset(json_file, image_root)
