#!/usr/bin/env python
"""Runs a trained model on images, folders, glob patterns and videos, and writes
pictures of its detections and one COCO-format results file.

    python tools/predict.py --config-file CFG --input PATH... [--output DIR] [--confidence 0.5] MODEL.WEIGHTS W
    python tools/predict.py --config-file CFG --traced export/model_traced.ts --input PATH...

See ``python tools/predict.py --help`` (gn_detection.predict.command).
"""

import sys

from gn_detection.predict.command import main

if __name__ == "__main__":
    sys.exit(main())
