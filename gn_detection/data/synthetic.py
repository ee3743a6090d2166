"""Random detection batches in detectron2's model input format, for tests and benchmarks:
images of random pixels with random box-shaped instances (boxes, classes, masks)."""

from typing import Sequence, Union

import torch
from detectron2.structures import BitMasks, Boxes, Instances

MIN_SIDE = 16
MIN_BOX = 12


def random_batch(
    num_images: int = 2,
    height: int = 64,
    width: int = 96,
    num_instances: Union[int, Sequence[int]] = 3,
    num_classes: int = 80,
    seed: int = 0,
) -> list:
    """``num_images`` dicts with "image" (uint8 BGR pixels, CHW), "height", "width" and
    "instances": gt_boxes on whole pixels inside the image, gt_classes in
    [0, num_classes) and gt_masks filling exactly each box.

    ``num_instances`` is the ground-truth count of every image (int) or of each image
    (a sequence, 0 allowed). Boxes start in the first 60% of each side and are
    MIN_BOX pixels plus up to 30% of the side long, clipped to the image.
    """
    counts = [num_instances] * num_images if isinstance(num_instances, int) else list(num_instances)
    if len(counts) != num_images or any(c < 0 for c in counts):
        raise ValueError(f"num_instances must be a count >= 0 or one per image ({num_images}), got {num_instances}")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {height}x{width}")
    generator = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float32)
    batch = []
    for count in counts:
        image = torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)
        corners = (torch.rand(count, 2, generator=generator) * size * 0.6).floor()
        ends = torch.minimum(corners + MIN_BOX + (torch.rand(count, 2, generator=generator) * size * 0.3).floor(), size)
        boxes = torch.cat([corners, ends], dim=1)
        masks = torch.zeros(count, height, width, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[k, y0:y1, x0:x1] = True
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = torch.randint(0, num_classes, (count,), generator=generator)
        instances.gt_masks = BitMasks(masks)
        batch.append({"image": image, "instances": instances, "height": height, "width": width})
    return batch
