"""A deterministic, built-in instance-segmentation dataset in COCO format.

Four kinds of objects (circle, square, triangle, ring) in random colors, sizes
from a tenth to half of the image, overlapping and occluding each other, on
textured and cluttered backgrounds; some images hold no object at all. Masks
are exact: each object is painted through the same boolean mask that is stored
(as COCO RLE, so rings keep their holes). Boxes and masks describe the visible
part, as in COCO. The shape of an object, not its color, tells its category, so
a model must learn shapes.

The same parameters give byte-identical files: every image draws from its own
random stream, seeded by (seed, split, index).
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_util

from gn_detection.data.coco_checked import register_checked_coco_instances

CATEGORIES = ("circle", "square", "triangle", "ring")
CATEGORY_COLORS = ((220, 60, 60), (60, 160, 220), (80, 200, 80), (230, 180, 40))  # RGB, for drawing
SPLIT_STREAMS = {"train": 0, "val": 1}
MIN_VISIBLE_FRACTION = 0.45  # objects hidden more than this by later ones are left out
MIN_VISIBLE_PIXELS = 24


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of one generated dataset."""

    num_train: int = 400
    num_val: int = 50
    image_size: int = 128
    max_objects: int = 5
    empty_fraction: float = 0.08
    seed: int = 0

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {self.image_size}")
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f"num_train and num_val must be positive, got {self.num_train} and {self.num_val}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be positive, got {self.max_objects}")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]

    @property
    def dirname(self) -> str:
        """A folder name that differs whenever the files would."""
        return (
            f"{self.image_size}px_train{self.num_train}_val{self.num_val}"
            f"_max{self.max_objects}_empty{self.empty_fraction:g}_seed{self.seed}"
        )


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth color noise, plus stripes or a checkerboard, plus clutter strokes."""
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pattern = rng.integers(3)
    if pattern == 0:
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        image += rng.uniform(10, 30) * wave[..., None]
    elif pattern == 1:
        cell = int(rng.integers(6, 16))
        checker = ((xx // cell + yy // cell) % 2) * 2 - 1
        image += rng.uniform(8, 25) * checker[..., None]
    image += rng.normal(0, 6, size=image.shape)
    for _ in range(int(rng.integers(0, 10))):
        start = tuple(int(v) for v in rng.integers(0, size, 2))
        end = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.line(image, start, end, color, int(rng.integers(1, 3)))
    return image


def _shape_mask(rng: np.random.Generator, category: str, size: int) -> np.ndarray:
    """The boolean mask of one object of ``category`` at a random place and scale."""
    mask = np.zeros((size, size), np.uint8)
    extent = rng.uniform(0.1, 0.5) * size
    radius = extent / 2
    cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
    center = (int(round(cx)), int(round(cy)))
    if category in ("circle", "ring"):
        cv2.circle(mask, center, int(round(radius)), 1, -1)
        if category == "ring":
            cv2.circle(mask, center, int(round(radius * rng.uniform(0.4, 0.65))), 0, -1)
    else:
        corners = 4 if category == "square" else 3
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
        points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def _object_color(rng: np.random.Generator, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A random color far enough from the background under ``mask`` to be seen."""
    under = background[mask].mean(axis=0)
    for _ in range(20):
        color = rng.uniform(0, 255, 3)
        if np.abs(color - under).sum() > 120:
            return color
    return 255 - under


def render_image(rng: np.random.Generator, spec: ShapesSpec):
    """One image (H, W, 3 uint8, BGR) and its objects as (category index, visible mask)."""
    size = spec.image_size
    image = _background(rng, size)
    count = 0 if rng.uniform() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 1))
    drawn = []
    for _ in range(count):
        category = int(rng.integers(len(CATEGORIES)))
        mask = _shape_mask(rng, CATEGORIES[category], size)
        color = _object_color(rng, image, mask)
        shading = rng.normal(0, 8, size=(size, size, 1))
        drawn.append((category, mask, color, shading))
    kept = _visible_objects(drawn)
    for category, mask, color, shading in kept:
        image[mask] = (color + shading)[mask]
    objects, covered = [], np.zeros((size, size), bool)
    for category, mask, _, _ in reversed(kept):
        objects.append((category, mask & ~covered))
        covered |= mask
    return np.clip(image, 0, 255).astype(np.uint8), objects[::-1]


def _visible_objects(drawn: list) -> list:
    """Drops, front to back, every object that the objects kept in front of it hide too much."""
    kept, covered = [], np.zeros_like(drawn[0][1]) if drawn else None
    for item in reversed(drawn):
        mask = item[1]
        visible = int((mask & ~covered).sum())
        if visible >= MIN_VISIBLE_PIXELS and visible >= MIN_VISIBLE_FRACTION * mask.sum():
            kept.append(item)
            covered |= mask
    return kept[::-1]


def _annotation(mask: np.ndarray, category: int, image_id: int, annotation_id: int) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category + 1,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": float(mask_util.area(rle)),
        "bbox": [x, y, w, h],
        "iscrowd": 0,
    }


def generate_split(
    root: str, split: str, spec: ShapesSpec, progress: Optional[Callable[[int, int], None]] = None
) -> str:
    """Writes ``root/<split>/*.png`` and ``root/annotations/instances_<split>.json``;
    returns the JSON's path. ``progress(done, total)`` is called as images are written."""
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    images: List[Dict] = []
    annotations: List[Dict] = []
    total = spec.num_images(split)
    for index in range(total):
        rng = np.random.default_rng([spec.seed, SPLIT_STREAMS[split], index])
        image, objects = render_image(rng, spec)
        file_name = f"{index:06d}.png"
        if not cv2.imwrite(os.path.join(image_dir, file_name), image):
            raise OSError(f"could not write image {os.path.join(image_dir, file_name)}")
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for category, mask in objects:
            annotations.append(_annotation(mask, category, image_id, len(annotations) + 1))
        if progress is not None:
            progress(index + 1, total)
    dataset = {
        "info": {"description": f"gn_detection built-in shapes dataset, {split} split", "generator": asdict(spec)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)],
    }
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(json_file + ".tmp", "w") as f:
        json.dump(dataset, f, sort_keys=True, separators=(",", ":"))
    os.replace(json_file + ".tmp", json_file)
    return json_file


class ProgressPrinter:
    """Prints ``label: done/total`` with an ETA, at most every ``interval`` seconds."""

    def __init__(self, label: str, interval: float = 2.0, printer: Callable[[str], None] = print):
        self.label, self.interval, self.printer = label, interval, printer
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.interval:
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (total - done)
        self.printer(f"{self.label}: {done}/{total} images, {elapsed:.0f} s elapsed, ETA {eta:.0f} s")


def ensure_shapes_dataset(datasets_root: str, spec: ShapesSpec, printer: Callable[[str], None] = print) -> str:
    """The folder of the dataset ``spec`` under ``datasets_root``, generated first if absent.
    A folder is complete once its ``done`` marker exists, so an interrupted
    generation is redone rather than used."""
    root = os.path.join(datasets_root, spec.dirname)
    marker = os.path.join(root, "done")
    if os.path.exists(marker):
        printer(f"built-in dataset: using {root}")
        return root
    printer(f"built-in dataset: generating {root}")
    for split in SPLIT_STREAMS:
        generate_split(root, split, spec, ProgressPrinter(f"generating {split}", printer=printer))
    with open(marker, "w") as f:
        f.write("complete\n")
    return root


def register_shapes_dataset(root: str, prefix: str = "gn_shapes") -> Tuple[str, str]:
    """Registers the splits of the dataset in ``root`` as ``<prefix>_train`` and
    ``<prefix>_val`` (with class names and colors), replacing a registration of
    these names to another folder; returns the two names."""
    names = []
    for split in SPLIT_STREAMS:
        name = f"{prefix}_{split}"
        register_checked_coco_instances(
            name,
            os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, split),
            CATEGORIES,
            CATEGORY_COLORS,
            replace=True,
        )
        names.append(name)
    return tuple(names)
