"""Training curves, val AP and comparison tables from detectron2's metrics.json
(one JSON object per line: the logged scalars of an iteration, the evaluation
results such as "segm/AP50" among them)."""

import json
import math
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402

LOSS_KEYS = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
AP_KEYS = ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50")


def read_metrics(path: str) -> List[Dict]:
    """The records of a metrics.json, in order."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not a JSON record ({error})") from None
    return records


def _iterations_done(record: Dict, last: int) -> int:
    """Iterations trained when ``record`` was logged. detectron2 stamps a step's
    scalars with the step's 0-based index, and the evaluation after the final step
    with the iteration count; ``last`` (the count of logged steps) caps both."""
    return min(record["iteration"] + 1, last)


def _series(records: List[Dict], key: str):
    last = max((r["iteration"] + 1 for r in records if "total_loss" in r), default=float("inf"))
    points = [(_iterations_done(r, last), r[key]) for r in records if key in r and "iteration" in r]
    return [p[0] for p in points], [p[1] for p in points]


def final_metrics(records: List[Dict]) -> Dict[str, float]:
    """The last evaluation's AP values (``AP_KEYS``) and its iteration count; empty if there was none."""
    evaluations = [r for r in records if "bbox/AP" in r]
    if not evaluations:
        return {}
    iterations, _ = _series(records, "bbox/AP")
    result = {"iteration": iterations[-1]}
    result.update({key: evaluations[-1][key] for key in AP_KEYS if key in evaluations[-1]})
    return result


def plot_training_curves(records: List[Dict], path: str) -> None:
    """Losses against iterations (left) and val AP at each evaluation (right), as a PNG."""
    figure, (losses, aps) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key in LOSS_KEYS:
        x, y = _series(records, key)
        if x:
            losses.plot(x, y, label=key, linewidth=1.5 if key == "total_loss" else 1)
    losses.set(xlabel="iteration", ylabel="loss (median of the logging window)", title="training losses")
    losses.set_yscale("log")
    losses.legend(fontsize=8)
    for key in AP_KEYS:
        x, y = _series(records, key)
        if x:
            aps.plot(x, y, marker="o", label=key)
    aps.set(xlabel="iteration", ylabel="AP (%)", title="val AP (COCOEvaluator)", ylim=(0, 100))
    aps.legend(fontsize=8)
    for axes in (losses, aps):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_comparison(runs: Dict[str, List[Dict]], path: str) -> None:
    """Val segm and bbox AP50 against iterations, one line per run, as a PNG."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for panel, key in zip(axes, ("segm/AP50", "bbox/AP50")):
        for name, records in runs.items():
            x, y = _series(records, key)
            if x:
                panel.plot(x, y, marker="o", label=name)
        panel.set(xlabel="iteration", ylabel=f"val {key} (%)", title=f"val {key}", ylim=(0, 100))
        panel.grid(alpha=0.3)
        panel.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def comparison_table(runs: Dict[str, List[Dict]]) -> str:
    """A Markdown table of each run's final val AP."""
    lines = ["| run | " + " | ".join(AP_KEYS) + " |", "|---|" + "---:|" * len(AP_KEYS)]
    for name, records in runs.items():
        final = final_metrics(records)
        cells = [f"{final[key]:.1f}" if key in final and math.isfinite(final[key]) else "n/a" for key in AP_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
