#!/usr/bin/env python
"""Trains and evaluates gn_detection's models with detectron2's ``DefaultTrainer``.

    python tools/train_net.py --config-file configs/table6_fpn/mask_rcnn_R_50_FPN_gn_2x.yaml --num-gpus 8
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file CONFIG --num-gpus 8 --num-machines 2 --machine-rank R \\
        --dist-url tcp://HOST:PORT          # on each machine
    python tools/train_net.py --config-file CONFIG --resume   # continue from OUTPUT_DIR/last_checkpoint

Trailing ``KEY VALUE`` pairs override the config. The test sets are scored by
COCO evaluation (bbox, and segm for Mask R-CNN); metrics go to OUTPUT_DIR through
detectron2's JSON and TensorBoard writers.
"""

from detectron2.engine import launch

from gn_detection.engine import argument_parser, main

if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
