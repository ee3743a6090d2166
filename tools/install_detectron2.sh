#!/usr/bin/env bash
# Installs detectron2's Python sources into the active Python environment when
# `import detectron2` fails (a user's own source build is kept).
#
# Upstream detectron2 has no PyPI release and its source install needs GitHub.
# PyPI's sal-detectron2==0.7.2 republishes upstream's Python sources in a wheel
# tagged cp310; its compiled _C (built for another Python) is ignored by newer
# Pythons, and everything Mask R-CNN needs falls back to torchvision ops.
set -euo pipefail
PYTHON="${PYTHON:-python}"
if "$PYTHON" -c "import detectron2" >/dev/null 2>&1; then
  echo "detectron2 already importable: keeping it"
  exit 0
fi
PURELIB="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
"$PYTHON" -m pip install --quiet --no-deps --only-binary=:all: --python-version 3.10 \
  --implementation cp --target "$PURELIB" sal-detectron2==0.7.2
"$PYTHON" -c "import detectron2; print('detectron2', detectron2.__version__, 'installed')"
