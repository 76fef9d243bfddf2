"""Zero-shot task runners: retrieval, classification, tagging, sound event detection, grounding and temporal order.

| task | columns (names overridable) | prompts | metrics |
|---|---|---|---|
| retrieval | `audio` + `caption` (str) or `captions` (list) | the captions | R@1/5/10/50, mAP@10, medR (both directions) |
| classification | `audio` + `label` (str or ClassLabel) | "{} can be heard" | accuracy (mean over folds) |
| tagging | `audio` + `labels` (list) | "{}" | mAP over classes |
| sed | `audio` + `events` (`{"event_label", "onset", "offset"}`, s) | "{}" | PSDS1, PSDS2, collar / segment F1 |
| grounding | `audio` + `phrase` + `segments` (`[[onset, offset], ...]`) | the phrase | PSDS at 0.7 / 0.1 / 0.5 (PSDSm) |
| temporal | `audio` + `label` (single-sound clips, ESC-50 style) | "a before b", ... | ZSTE accuracy per relation, order |

Labels are prompted as the official scripts do: `_` becomes a space (SED also lower-cases). Evaluation is
deterministic: clips longer than 10 s are cut from the start for the clip-level tasks (the official retrieval loader
crops at random; this does not), and go through the 10 s sliding-window path for SED / grounding (the official
scripts truncate). Shorter clips are zero-padded (masked) for retrieval / classification / tagging and repeat-padded
for SED / grounding, as the official scripts. SED scores are raw frame-text cosines, grounding scores their sigmoid.
The metrics are the `evaluate` modules of `metrics/` (the established PSDS packages), retrieval the package's own
[`~evaluation.retrieval.retrieval_metrics`].
"""

from importlib.resources import files
from pathlib import Path

import torch

from ..data.labels import class_indices, class_names_of, label_text
from ..data.sources import iterate_waveforms
from ..embedding import embed_audio, embed_text
from .frames import iterate_frame_scores
from .plots import plot_frame_similarity
from .retrieval import retrieval_metrics
from .synthetic import TASKS

DEFAULT_PROMPTS = {"classification": "{} can be heard", "tagging": "{}", "sed": "{}", "grounding": "{}"}
DEFAULT_COLUMNS = {
    "audio": "audio",
    "caption": None,  # retrieval: "captions" if present, else "caption"
    "label": "label",
    "labels": "labels",
    "events": "events",
    "phrase": "phrase",
    "segments": "segments",
}


def load_metric(name: str):
    """One of the package's `evaluate` modules (`metrics/<name>`), wherever the package is installed."""
    import evaluate

    return evaluate.load(str(files("transformers_mgaclap.metrics") / name))


def _column(dataset, name: str | None, task: str, what: str) -> str:
    if name is None or name not in dataset.column_names:
        raise ValueError(
            f"The {task} task needs a {what} column {name!r}; the dataset has {dataset.column_names} "
            f"(choose another with --{what}_column)."
        )
    return name


def prompt_text(label, template: str, lower: bool = False) -> str:
    """A class name as a prompt: `_` -> space, optionally lower-cased, put into `template`."""
    text = label_text(label)
    return template.format(text.lower() if lower else text)


def clip_embeddings(model, processor, dataset, audio_column: str, batch_size: int) -> torch.Tensor:
    """`(num_clips, D)` normalised clip embeddings, zero-padded as the official clip-level evaluations."""
    rate = processor.feature_extractor.sampling_rate
    chunks = [
        embed_audio(
            model, processor, waveforms, padding_mode="zero", truncation_mode="start", batch_size=batch_size
        ).clip_embeds.cpu()
        for _, waveforms in iterate_waveforms(dataset, audio_column, rate, batch_size)
    ]
    return torch.cat(chunks)


def text_embeddings(model, processor, texts: list[str], batch_size: int) -> torch.Tensor:
    return embed_text(model, processor, texts, batch_size=batch_size).text_embeds.cpu()


def evaluate_retrieval(model, processor, dataset, columns: dict, batch_size: int) -> dict:
    caption_column = columns["caption"] or ("captions" if "captions" in dataset.column_names else "caption")
    caption_column = _column(dataset, caption_column, "retrieval", "caption")
    captions, owners = [], []
    for index, value in enumerate(dataset[caption_column]):
        for caption in [value] if isinstance(value, str) else list(value):
            if not str(caption).strip():
                raise ValueError(f"Example {index} has an empty caption.")
            captions.append(caption)
            owners.append(index)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size)
    text = text_embeddings(model, processor, captions, batch_size)
    metrics = retrieval_metrics((text.double() @ audio.double().t()).numpy(), owners)
    return {"metrics": metrics, "details": {"num_captions": len(captions)}}


def evaluate_classification(
    model, processor, dataset, columns: dict, batch_size: int, template: str, folds
) -> dict:
    label_column = _column(dataset, columns["label"], "classification", "label")
    references, classes = class_indices(list(dataset[label_column]), class_names_of(dataset, label_column))
    text = text_embeddings(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size)
    scores = (audio.double() @ text.double().t()).numpy()
    fold_values = None if folds is None else dataset[_column(dataset, folds, "classification", "fold")]
    metrics = load_metric("audio_classification_accuracy").compute(
        predictions=scores.tolist(), references=references, top_k=(1, 5), folds=fold_values
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def evaluate_tagging(model, processor, dataset, columns: dict, batch_size: int, template: str) -> dict:
    labels_column = _column(dataset, columns["labels"], "tagging", "labels")
    label_lists = [[str(v) for v in row] for row in dataset[labels_column]]
    classes = sorted({label for row in label_lists for label in row})
    text = text_embeddings(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size)
    scores = (audio.double() @ text.double().t()).numpy()
    targets = [[int(c in row) for c in classes] for row in label_lists]
    metrics = load_metric("audio_tagging_map").compute(
        predictions=scores.tolist(), references=targets, class_names=classes
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def evaluate_sed(
    model, processor, dataset, columns: dict, batch_size: int, template: str, plots: int, out: Path
):
    events_column = _column(dataset, columns["events"], "sed", "events")
    events = [[dict(e) for e in row] for row in dataset[events_column]]
    classes = sorted({e["event_label"] for row in events for e in row})
    if not classes:
        raise ValueError("No reference events in the dataset: nothing to evaluate.")
    text = text_embeddings(
        model, processor, [prompt_text(c, template, lower=True) for c in classes], batch_size
    )
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration in iterate_frame_scores(
        model, processor, dataset, columns["audio"], batch_size, lambda _: text
    ):
        predictions.append(scores.numpy().tolist())
        timestamps.append(boundaries.numpy().tolist())
        durations.append(duration)
        if index < plots:
            plot_frame_similarity(
                out / f"sed_{index:04d}.png", scores, boundaries, classes, events[index], f"example {index}"
            )
    metrics = load_metric("sound_event_detection").compute(
        predictions=predictions,
        references=events,
        timestamps=timestamps,
        durations=durations,
        event_classes=classes,
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def evaluate_grounding(
    model, processor, dataset, columns: dict, batch_size: int, template: str, plots: int, out: Path
):
    phrase_column = _column(dataset, columns["phrase"], "grounding", "phrase")
    segments_column = _column(dataset, columns["segments"], "grounding", "segments")
    phrases = [prompt_text(p, template) for p in dataset[phrase_column]]
    if not all(p.strip() for p in phrases):
        raise ValueError("A grounding phrase is empty.")
    text = text_embeddings(model, processor, phrases, batch_size)
    segments = [[list(map(float, s)) for s in row] for row in dataset[segments_column]]
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration in iterate_frame_scores(
        model, processor, dataset, columns["audio"], batch_size, lambda i: text[i : i + 1]
    ):
        predictions.append(torch.sigmoid(scores[:, 0]).tolist())  # the official grounding score
        timestamps.append(boundaries.tolist())
        durations.append(duration)
        if index < plots:
            reference = [{"event_label": phrases[index], "onset": a, "offset": b} for a, b in segments[index]]
            title = f"query {index}"
            plot_frame_similarity(
                out / f"grounding_{index:04d}.png", scores, boundaries, [phrases[index]], reference, title
            )
    metrics = load_metric("text_to_audio_grounding").compute(
        predictions=predictions, references=segments, timestamps=timestamps, durations=durations
    )
    return {"metrics": metrics, "details": {}}


def evaluate_temporal_task(model, processor, dataset, columns: dict, batch_size: int, num_pairs: int) -> dict:
    from ..extensions.temporal import evaluate_temporal

    label_column = _column(dataset, columns["label"], "temporal", "label")
    metrics = evaluate_temporal(
        model,
        processor,
        dataset,
        num_pairs=num_pairs,
        batch_size=batch_size,
        audio_column=columns["audio"],
        label_column=label_column,
    )
    return {"metrics": metrics, "details": {}}


def evaluate_task(
    model,
    processor,
    dataset,
    task: str,
    *,
    columns: dict | None = None,
    prompt_template: str | None = None,
    fold_column: str | None = None,
    batch_size: int = 16,
    num_plots: int = 0,
    plots_dir: str | Path = "plots",
    num_temporal_pairs: int = 100,
) -> dict:
    """Run one task on a dataset; returns `{"metrics": {name: value, ...}, "details": {...}}`.

    Args:
        model, processor: an MGA-CLAP model and its processor.
        dataset (`datasets.Dataset`): the task's columns (module docstring).
        task (`str`): one of `TASKS`.
        columns (`dict`, *optional*): column names overriding [`DEFAULT_COLUMNS`].
        prompt_template (`str`, *optional*): overrides the task's official prompt ([`DEFAULT_PROMPTS`]).
        fold_column (`str`, *optional*): classification: the mean of the per-fold accuracies.
        batch_size (`int`): clips and texts per model call.
        num_plots (`int`): SED / grounding: PNG plots of the first rows, in `plots_dir`.
        num_temporal_pairs (`int`): temporal: class-pair draws.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    _column(dataset, columns["audio"], task, "audio")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    template = prompt_template or DEFAULT_PROMPTS.get(task, "{}")
    common = (model, processor, dataset, columns, batch_size)
    if task == "retrieval":
        return evaluate_retrieval(*common)
    if task == "classification":
        return evaluate_classification(*common, template, fold_column)
    if task == "tagging":
        return evaluate_tagging(*common, template)
    if task == "sed":
        return evaluate_sed(*common, template, num_plots, Path(plots_dir))
    if task == "grounding":
        return evaluate_grounding(*common, template, num_plots, Path(plots_dir))
    return evaluate_temporal_task(*common, num_temporal_pairs)


__all__ = ["DEFAULT_COLUMNS", "DEFAULT_PROMPTS", "TASKS", "evaluate_task", "load_metric", "prompt_text"]
