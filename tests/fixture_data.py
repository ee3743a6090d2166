"""Where the tests find the shared real data (``../shared/data`` beside the
repository), and how they react when it is absent: a plain clone without it
skips those tests with the reason; CI (``CI`` set), which always has it, fails."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO_EVAL_FIXTURE = SHARED_DATA / "coco_eval_fixture"
COCO_REAL16 = SHARED_DATA / "coco_real16"


def require(path: Path, what: str):
    """A pytest mark that skips when ``path`` is missing, or raises there under CI."""
    if not path.exists() and os.environ.get("CI"):
        raise FileNotFoundError(f"{what} not found at {path} (required when CI is set)")
    return pytest.mark.skipif(not path.exists(), reason=f"{what} not found at {path}")
