#!/usr/bin/env python
"""Trains and evaluates gn_detection's models with detectron2's ``DefaultTrainer``.

    python tools/train_net.py --config-file configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CONFIG --resume   # continue from OUTPUT_DIR/last_checkpoint
    python tools/train_net.py --config-file CONFIG --dataset mine_train ANNOTATIONS.json IMAGE_DIR \\
        --dataset mine_val VAL.json VAL_IMAGE_DIR DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "('mine_val',)"
    python tools/train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank R \\
        --dist-url tcp://HOST:PORT          # on each machine
    python tools/train_net.py --config-file CONFIG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (Gloo)

``--dataset NAME ANNOTATIONS.json IMAGE_DIR`` (repeatable) registers a COCO-format
instances dataset; MODEL.ROI_HEADS.NUM_CLASSES follows its categories unless given
on the command line, where it must match them. Trailing ``KEY VALUE`` pairs
override the config. The test sets are scored by COCO evaluation (bbox, and segm
for Mask R-CNN; faster-coco-eval when installed); metrics go to OUTPUT_DIR through
detectron2's JSON and TensorBoard writers.
"""

import sys

from gn_detection.engine import run

if __name__ == "__main__":
    sys.exit(run())
