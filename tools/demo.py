#!/usr/bin/env python
"""The main job (`make demo`): trains a GN Mask R-CNN from scratch on the CPU on the
built-in shapes dataset, evaluates it and draws what it learned. ``--help`` lists
the options; the steps are in :mod:`gn_detection.demo.run`."""

import sys

from gn_detection.demo.run import main

if __name__ == "__main__":
    sys.exit(main())
