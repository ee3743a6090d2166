"""COCO-format datasets loaded with their inputs checked first.

detectron2's ``load_coco_json`` trusts its file: an image that is listed but
missing surfaces as a bare ``cv2``/PIL error in a data-loader worker much later,
and an undeclared category id as a ``KeyError``. ``load_checked_coco_json``
checks the annotation file, every image record and every annotation first, and
stops with an error that names the file and the record; then it hands the file
to ``load_coco_json``, so the dicts and metadata are exactly detectron2's.
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.utils.colormap import colormap


class DatasetError(ValueError):
    """A COCO-format dataset that cannot be used as it is."""


def _read_annotation_file(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file {json_file} does not exist")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"annotation file {json_file} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"annotation file {json_file} must hold a JSON object, not {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"annotation file {json_file} has no '{key}' list")
    return data


def _check_record(json_file: str, kind: str, index: int, record, keys: Sequence[str]) -> None:
    missing = [key for key in keys if not isinstance(record, dict) or key not in record]
    if missing:
        raise DatasetError(f"annotation file {json_file}: {kind} record #{index} lacks {', '.join(missing)}: {record!r}")


def _check_image(json_file: str, image_root: str, index: int, record: dict, decode: bool) -> None:
    path = os.path.join(image_root, record["file_name"])
    where = f"annotation file {json_file}: image record #{index} (id {record['id']}, file_name {record['file_name']!r})"
    if not os.path.isfile(path):
        raise DatasetError(f"{where}: image file {path} does not exist")
    if decode:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(f"{where}: image file {path} cannot be read as an image")
        height, width = image.shape[:2]
        if (record.get("height", height), record.get("width", width)) != (height, width):
            raise DatasetError(
                f"{where}: record says {record.get('height')}x{record.get('width')} but image file {path} "
                f"is {height}x{width}"
            )


def check_coco_dataset(json_file: str, image_root: str, decode_images: bool = True) -> Tuple[int, int]:
    """Checks a COCO instances file and its images; returns (images, annotations).

    Raises ``DatasetError`` naming the file and the record for: a missing or
    unparsable annotation file, a listed image that is missing or unreadable (or
    whose size differs from its record), an annotation whose image or category
    id is not declared, a repeated image or category id, and records that lack
    required keys.
    """
    data = _read_annotation_file(json_file)
    category_ids = {category["id"] for category in _checked_categories(json_file, data)}
    image_ids = set()
    for index, image in enumerate(data["images"]):
        _check_record(json_file, "image", index, image, ("id", "file_name"))
        if image["id"] in image_ids:
            raise DatasetError(f"annotation file {json_file}: image record #{index} repeats image id {image['id']}")
        image_ids.add(image["id"])
        _check_image(json_file, image_root, index, image, decode_images)
    for index, annotation in enumerate(data["annotations"]):
        _check_record(json_file, "annotation", index, annotation, ("id", "image_id", "category_id", "bbox"))
        where = f"annotation file {json_file}: annotation record #{index} (id {annotation['id']})"
        if annotation["category_id"] not in category_ids:
            raise DatasetError(
                f"{where} has category_id {annotation['category_id']!r}, which is not among the declared "
                f"categories {sorted(category_ids)}"
            )
        if annotation["image_id"] not in image_ids:
            raise DatasetError(f"{where} refers to image_id {annotation['image_id']!r}, which no image record declares")
    return len(data["images"]), len(data["annotations"])


def load_checked_coco_json(json_file: str, image_root: str, dataset_name: Optional[str] = None) -> List[Dict]:
    """``check_coco_dataset``, then detectron2's ``load_coco_json``."""
    check_coco_dataset(json_file, image_root)
    return load_coco_json(json_file, image_root, dataset_name)


def register_checked_coco_instances(
    name: str,
    json_file: str,
    image_root: str,
    thing_classes: Sequence[str],
    thing_colors: Sequence[Sequence[int]],
    replace: bool = False,
) -> None:
    """Registers ``name`` in ``DatasetCatalog`` (loaded by ``load_checked_coco_json``)
    and its ``MetadataCatalog`` entry (classes, colors, ``json_file``,
    ``image_root``, ``evaluator_type`` "coco"), as ``register_coco_instances``
    does plus the class names and colors that ``Visualizer`` draws with.
    Registering the same name again with the same files is a no-op; with other
    files it is an error unless ``replace``, which drops the old entry first."""
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("json_file") == json_file:
            return
        if not replace:
            raise DatasetError(
                f"dataset {name!r} is already registered with annotation file "
                f"{MetadataCatalog.get(name).get('json_file')}, not {json_file}"
            )
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(thing_classes),
        thing_colors=[tuple(color) for color in thing_colors],
    )


def coco_categories(json_file: str) -> List[Dict]:
    """The category records of a COCO instances file, sorted by id (the order of
    detectron2's contiguous class indices); a file with no categories, a record
    without id or name, or a repeated id is a ``DatasetError``."""
    data = _read_annotation_file(json_file)
    if not data["categories"]:
        raise DatasetError(f"annotation file {json_file} declares no categories")
    return _checked_categories(json_file, data)


def _checked_categories(json_file: str, data: Dict) -> List[Dict]:
    """The category records of ``data`` sorted by id; a record without id or name,
    or a repeated id, is a ``DatasetError``."""
    seen = set()
    for index, category in enumerate(data["categories"]):
        _check_record(json_file, "category", index, category, ("id", "name"))
        if category["id"] in seen:
            raise DatasetError(f"annotation file {json_file}: category record #{index} repeats id {category['id']}")
        seen.add(category["id"])
    return sorted(data["categories"], key=lambda category: category["id"])


def register_coco_dataset(name: str, json_file: str, image_root: str) -> List[str]:
    """Registers the COCO instances file ``json_file`` (images under ``image_root``)
    as ``name`` with its class names (categories sorted by id), the map from its
    category ids to detectron2's contiguous indices, and colors from detectron2's
    palette; returns the class names. The file and every image are checked when
    the dataset is first loaded (``load_checked_coco_json``); the categories now,
    so that the number of classes is known before a model is built."""
    categories = coco_categories(json_file)
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    classes = [category["name"] for category in categories]
    colors = [palette[index % len(palette)] for index in range(len(classes))]
    register_checked_coco_instances(name, json_file, image_root, classes, colors)
    id_map = {category["id"]: index for index, category in enumerate(categories)}
    MetadataCatalog.get(name).set(thing_dataset_id_to_contiguous_id=id_map)
    return classes
