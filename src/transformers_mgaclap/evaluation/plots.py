"""Frame-level similarity over the reference events, as the paper's Figures 1 and 8."""

from pathlib import Path

import numpy as np

from ..data.labels import label_text
from ..data.sources import load_waveforms
from ..embedding import embed_text
from .frames import frame_scores
from .synthetic import synthetic_dataset


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


def plot_held_out_clip(
    model, processor, path: str | Path, *, seed: int = 1234, num_candidates: int = 8, model_name: str = ""
) -> dict:
    """Save the frame-similarity PNG of a held-out synthetic clip: the picture of model cards and of the README.

    The clip is the one with the most sound classes among the first `num_candidates` clips of the soundscape
    generator's "test" stream (never trained on; the evaluation's held-out sets with the same `seed` start with the
    same clips). Each class present is a query prompted as the SED task prompts it (the bare label, lower-cased).
    `model_name` starts the title. The caller puts `model` in eval mode.

    Returns:
        `dict`: the clip's `clip_id` and reference `events`.
    """
    dataset = synthetic_dataset("sed", num_clips=num_candidates, seed=seed)
    events = dataset["events"]
    index = max(range(len(events)), key=lambda i: len({e["event_label"] for e in events[i]}))
    clip = dataset.select([index])
    classes = sorted({e["event_label"] for e in events[index]})
    text = embed_text(model, processor, [label_text(c).lower() for c in classes]).text_embeds
    waveform = load_waveforms(clip, "audio", processor.feature_extractor.sampling_rate)[0]
    scores, boundaries = frame_scores(model, processor, waveform, text)
    clip_id = clip["clip_id"][0]
    title = ", ".join(filter(None, [model_name, "held-out synthetic clip"]))  # the id is returned, not shown
    plot_frame_similarity(path, scores, boundaries, classes, events[index], title)
    return {"clip_id": clip_id, "events": events[index]}


__all__ = ["plot_frame_similarity", "plot_held_out_clip"]
