"""Predictions as one COCO-format results file (``image_id``, ``category_id``,
``bbox``, ``score``, RLE ``segmentation``): the file ``tools/evaluate_json.py``
scores, in the format of detectron2's own ``coco_instances_results.json``."""

import json
import os
from typing import Dict, List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json


class ImageIds:
    """COCO image ids for input files: an image of the config's registered test
    set keeps its id there (so the results score against that set's
    annotations); any other image, or every image when the test set's annotation
    file is not on this machine, gets the next id after the largest one."""

    def __init__(self, dataset_name: Optional[str]):
        self.by_path: Dict[str, int] = {}
        json_file = MetadataCatalog.get(dataset_name).get("json_file") if dataset_name else None
        if json_file and os.path.isfile(json_file):
            image_root = MetadataCatalog.get(dataset_name).get("image_root", "")
            with open(json_file) as f:
                for image in json.load(f).get("images", []):
                    self.by_path[os.path.realpath(os.path.join(image_root, image["file_name"]))] = image["id"]
        self.next_id = max(self.by_path.values(), default=0) + 1

    def __call__(self, path: str) -> int:
        key = os.path.realpath(path)
        if key not in self.by_path:
            self.by_path[key] = self.next_id
            self.next_id += 1
        return self.by_path[key]


def coco_results(instances, image_id: int, metadata) -> List[dict]:
    """detectron2's ``instances_to_coco_json``, with class indices turned back into
    the dataset's category ids when ``metadata`` maps them (else left as indices)."""
    results = instances_to_coco_json(instances, image_id)
    to_dataset_id = {index: id for id, index in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    for result in results:
        result["category_id"] = to_dataset_id.get(result["category_id"], result["category_id"])
    return results
