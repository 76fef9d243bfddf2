"""Result files of an evaluation run: `results.json` (metric -> value), `details.json` and `results.md`."""

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of the Student-t confidence interval of the mean."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def scalar_metrics(metrics: dict) -> tuple[dict, dict]:
    """Split metric outputs into scalars (results.json) and structured values (details.json)."""
    scalars = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))
    }
    rest = {k: v for k, v in metrics.items() if k not in scalars}
    return scalars, rest


def markdown_report(task: str, scalars: dict, settings: dict) -> str:
    """A markdown table of the metrics, then one of the run's settings."""
    lines = [f"# Zero-shot {task}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in scalars.items()]
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def write_results(output_dir: str | Path, task: str, results: dict, settings: dict) -> dict:
    """Write `results.json`, `details.json` and `results.md` into `output_dir`; returns the scalar metrics."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    scalars, structured = scalar_metrics(results["metrics"])
    (output_dir / "results.json").write_text(json.dumps(scalars, indent=2) + "\n")
    details = {"settings": settings, **structured, **results["details"]}
    (output_dir / "details.json").write_text(json.dumps(details, indent=2, default=str) + "\n")
    (output_dir / "results.md").write_text(markdown_report(task, scalars, settings))
    return scalars


__all__ = ["markdown_report", "mean_confidence_interval", "scalar_metrics", "write_results"]
