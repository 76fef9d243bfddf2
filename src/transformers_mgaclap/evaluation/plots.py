"""Frame-level similarity over the reference events, as the paper's Figures 1 and 8."""

from pathlib import Path

import numpy as np


def plot_frame_similarity(
    path: str | Path, scores, boundaries, queries, reference_events, title: str
) -> None:
    """Save a PNG: one step curve per query (frame-text cosine over time), its reference events shaded.

    Args:
        path: the PNG to write (folders are created).
        scores (array-like of shape `(frames, queries)`): frame scores.
        boundaries (array-like of shape `(frames + 1,)`): frame edges in seconds.
        queries (`list[str]`): one name per score column.
        reference_events (`list[dict]`): `{"event_label", "onset", "offset"}`; only the queries with a reference
            event are drawn (the first three when none has one).
        title (`str`): the plot's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [q for q in queries if any(e["event_label"] == q for e in reference_events)]
    shown = present or list(queries[:3])
    figure, axis = plt.subplots(figsize=(8, 2.2 + 0.3 * len(shown)))
    colors = plt.get_cmap("tab10")
    for k, query in enumerate(shown):
        color = colors(k % 10)
        column = list(queries).index(query)
        values = np.asarray(scores[:, column], dtype=np.float64)
        axis.stairs(values, np.asarray(boundaries, dtype=np.float64), color=color, label=query, linewidth=1.5)
        for event in reference_events:
            if event["event_label"] == query:
                axis.axvspan(event["onset"], event["offset"], color=color, alpha=0.15)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("frame-text cosine")
    axis.set_title(f"{title}: shaded = reference events")
    axis.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


__all__ = ["plot_frame_similarity"]
