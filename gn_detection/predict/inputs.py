"""The images and videos that ``tools/predict.py`` runs on, from the paths,
folders and glob patterns given to ``--input``."""

import glob
import os
from dataclasses import dataclass, field
from typing import List, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


@dataclass
class Inputs:
    images: List[str] = field(default_factory=list)
    videos: List[str] = field(default_factory=list)
    not_found: List[str] = field(default_factory=list)  # entries that name nothing


def _add_file(found: Inputs, path: str) -> None:
    if path.lower().endswith(VIDEO_EXTENSIONS):
        found.videos.append(path)
    else:  # any other file is tried as an image, and reported if it does not read as one
        found.images.append(path)


def collect_inputs(entries: Sequence[str]) -> Inputs:
    """Files as given; folders as their image and video files (sorted, not
    recursive); anything else as a glob pattern (sorted matches). An entry that
    names no existing file, and a pattern without matches, go to ``not_found``.
    A file named twice is kept once."""
    found = Inputs()
    for entry in entries:
        if os.path.isdir(entry):
            names = sorted(os.listdir(entry))
            files = [os.path.join(entry, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)]
        elif os.path.isfile(entry):
            files = [entry]
        else:
            files = sorted(path for path in glob.glob(entry) if os.path.isfile(path))
        if not files:
            found.not_found.append(entry)
        for path in files:
            if path not in found.images and path not in found.videos:
                _add_file(found, path)
    return found
