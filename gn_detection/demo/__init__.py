"""The demo (tools/demo.py; its steps in :mod:`gn_detection.demo.run`) and what it reports: curves and tables read from detectron2's
metrics.json, and pictures of a trained model's predictions."""

from gn_detection.demo.pictures import draw_predictions
from gn_detection.demo.report import (
    comparison_table,
    final_metrics,
    plot_comparison,
    plot_training_curves,
    read_metrics,
)

__all__ = [
    "comparison_table",
    "draw_predictions",
    "final_metrics",
    "plot_comparison",
    "plot_training_curves",
    "read_metrics",
]
