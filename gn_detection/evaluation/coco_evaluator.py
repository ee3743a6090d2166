"""detectron2's ``COCOEvaluator`` scoring with faster-coco-eval, and reporting all 12 COCO numbers.

detectron2's evaluator runs its own C++ COCOeval (``COCOeval_opt``) only when
detectron2 was compiled with its ``_C`` extension; pip installs without it fall
back to pycocotools' pure-Python COCOeval, whose per-image matching and
accumulation dominate evaluation on large test sets. faster-coco-eval's
``COCOeval_faster`` does evaluate/accumulate in C++ and gives pycocotools'
numbers (to 1e-15 on the COCO fixture of the tests).

``COCOEvaluator`` below keeps everything of detectron2's evaluator (gathering
from all processes, the category-id mapping, the saved
``coco_instances_results.json``, per-category AP) and changes only the class
that scores. detectron2 takes no argument for that class: it looks it up in its
module's ``COCOeval`` attribute when it scores (with its fast implementation
off, as here), so the evaluator points that attribute at the chosen backend for
the duration of its own scoring call, and restores it after.
"""

import contextlib
from typing import Optional

from detectron2.evaluation import COCOEvaluator as Detectron2COCOEvaluator
from detectron2.evaluation import coco_evaluation

from gn_detection.evaluation.coco_json import BACKENDS, STAT_NAMES, coco_api

# The 6 recall numbers after detectron2's 6 AP numbers in COCOeval.stats (bbox and segm).
RECALL_NAMES = STAT_NAMES[6:]


def default_backend() -> str:
    """"faster-coco-eval" when it is installed, else "pycocotools"."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return "pycocotools"
    return "faster-coco-eval"


@contextlib.contextmanager
def _scoring_class(cocoeval_class):
    """detectron2's evaluator scores with ``cocoeval_class`` inside this block."""
    original = coco_evaluation.COCOeval
    coco_evaluation.COCOeval = cocoeval_class
    try:
        yield
    finally:
        coco_evaluation.COCOeval = original


class COCOEvaluator(Detectron2COCOEvaluator):
    """detectron2's ``COCOEvaluator`` (same arguments) scoring with ``backend``
    ("faster-coco-eval" or "pycocotools"; default: faster-coco-eval when
    installed), whose bbox and segm results also hold the 6 recall numbers
    (AR1, AR10, AR100, ARs, ARm, ARl, in percent) next to the 6 AP numbers."""

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, backend: Optional[str] = None,
                 **kwargs):  # fmt: skip
        kwargs["use_fast_impl"] = False  # detectron2 then scores with COCOeval, which _scoring_class sets
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self.backend = backend or default_backend()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        self._cocoeval_class = coco_api(self.backend)[1]

    def _eval_predictions(self, predictions, img_ids=None):
        self._logger.info(f"COCO evaluation with {self.backend}")
        with _scoring_class(self._cocoeval_class):
            super()._eval_predictions(predictions, img_ids=img_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if coco_eval is not None and iou_type in ("bbox", "segm"):
            for name, value in zip(RECALL_NAMES, coco_eval.stats[6:12]):
                results[name] = float(value * 100) if value >= 0 else float("nan")
        return results
