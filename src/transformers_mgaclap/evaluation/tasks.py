"""Zero-shot task runners: retrieval, classification, tagging, sound event detection, grounding and temporal order.

| task | columns (names overridable) | prompts | metrics |
|---|---|---|---|
| retrieval | `audio` + `caption` (str) or `captions` (list) | the captions | R@1/5/10/50, mAP@10, medR (both directions) |
| classification | `audio` + `label` (str or ClassLabel) | "{} can be heard" | accuracy (mean over folds) |
| tagging | `audio` + `labels` (list) | "{}" | mAP over classes |
| sed | `audio` + `events` (`{"event_label", "onset", "offset"}`, s) | "{}" | PSDS1, PSDS2, collar / segment F1 |
| grounding | `audio` + `phrase` + `segments` (`[[onset, offset], ...]`) | the phrase | PSDS at 0.7 / 0.1 / 0.5 (PSDSm) |
| temporal | `audio` + `label` (single-sound clips, ESC-50 style) | "a before b", ... | ZSTE accuracy per relation, order; order / 3-way / while-vs-then by global cosine and by frame grounding |

Labels are prompted as the official scripts do: `_` becomes a space (SED also lower-cases). Evaluation is
deterministic: clips longer than 10 s are cut from the start for the clip-level tasks (the official retrieval loader
crops at random; this does not), and go through the 10 s sliding-window path for SED / grounding (the official
scripts truncate). Shorter clips are zero-padded (masked) for retrieval / classification / tagging and repeat-padded
for SED / grounding, as the official scripts. SED scores are raw frame-text cosines, grounding scores their sigmoid.
The SED events and grounding segments are validated before any clip is embedded ([`~evaluation.validation`]): an
invalid one stops the run naming its row, field and rule, or, with `skip_invalid_events`, its row is left out and
counted; offsets past a clip's end are clipped to it; SED labels differing only by case or whitespace are one class.
The metrics are the `evaluate` modules of `metrics/` (the established PSDS packages), retrieval the package's own
[`~evaluation.retrieval.retrieval_metrics`].
"""

from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from ..data.labels import class_indices, class_names_of, label_text
from ..data.sources import iterate_waveforms
from ..embedding import embed_audio, embed_text
from ..utils.cli import require_extra
from .frames import iterate_frame_scores
from .plots import plot_frame_similarity
from .retrieval import retrieval_metrics
from .synthetic import TASKS
from .validation import ValidatedReferences, validate_grounding_segments, validate_sed_events

DEFAULT_PROMPTS = {"classification": "{} can be heard", "tagging": "{}", "sed": "{}", "grounding": "{}"}
# What each task's metric module imports (the `eval` extra); retrieval and temporal need none.
METRIC_MODULES = {
    "retrieval": (),
    "classification": ("evaluate",),
    "tagging": ("evaluate", "sklearn"),
    "sed": ("evaluate", "sed_scores_eval", "scipy"),
    "grounding": ("evaluate", "psds_eval", "scipy"),
    "temporal": (),
}
PLOTTING_TASKS = ("sed", "grounding")
SED_METRICS = ("psds1", "psds2", "collar_f1", "segment_f1")
SED_DIAGNOSTICS = ("psds1_alpha_st0", "psds2_alpha_st0")  # the sound_event_detection module's, on request
DEFAULT_COLUMNS = {
    "audio": "audio",
    "caption": None,  # retrieval, one column or a list: "captions" if present, else "caption"
    "label": "label",
    "labels": "labels",
    "events": "events",
    "phrase": "phrase",
    "segments": "segments",
}


def required_modules(task: str, num_plots: int = 0) -> tuple[str, ...]:
    """The optional packages `task` imports (all of the `eval` extra): its metric's, and matplotlib for plots."""
    plots = ("matplotlib",) if num_plots and task in PLOTTING_TASKS else ()
    return METRIC_MODULES[task] + plots


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


def clip_embeddings(
    model, processor, dataset, audio_column: str, batch_size: int, progress: bool = False
) -> torch.Tensor:
    """`(num_clips, D)` normalised clip embeddings, zero-padded as the official clip-level evaluations
    (`progress`: a bar in clips)."""
    rate = processor.feature_extractor.sampling_rate
    batches = iterate_waveforms(dataset, audio_column, rate, batch_size, progress, "Embedding clips")
    chunks = [
        embed_audio(
            model, processor, waveforms, padding_mode="zero", truncation_mode="start", batch_size=batch_size
        ).clip_embeds.cpu()
        for _, waveforms in batches
    ]
    return torch.cat(chunks)


def text_embeddings(
    model, processor, texts: list[str], batch_size: int, progress: bool = False
) -> torch.Tensor:
    return embed_text(model, processor, texts, batch_size=batch_size, progress=progress).text_embeds.cpu()


def _caption_columns(dataset, columns: dict) -> list[str]:
    """The retrieval task's caption columns: one name or several (the Hub's Clotho: `caption_1` ... `caption_5`)."""
    names = columns["caption"] or ("captions" if "captions" in dataset.column_names else "caption")
    return [
        _column(dataset, name, "retrieval", "caption")
        for name in ([names] if isinstance(names, str) else names)
    ]


def retrieval_similarity(
    model, processor, dataset, columns: dict, batch_size: int, progress: bool = False
) -> tuple[np.ndarray, list[int]]:
    """The retrieval task's float64 caption-by-clip cosines `(num_captions, num_clips)` and the clip of every caption
    (every caption of every caption column, row by row)."""
    caption_columns = _caption_columns(dataset, columns)
    captions, owners = [], []
    for index, row in enumerate(dataset.select_columns(caption_columns)):
        for value in row.values():
            for caption in [value] if isinstance(value, str) else list(value):
                if not str(caption).strip():
                    raise ValueError(f"Example {index} has an empty caption.")
                captions.append(caption)
                owners.append(index)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size, progress)
    text = text_embeddings(model, processor, captions, batch_size, progress)
    return (text.double() @ audio.double().t()).numpy(), owners


def evaluate_retrieval(model, processor, dataset, columns: dict, batch_size: int, progress: bool) -> dict:
    similarity, owners = retrieval_similarity(model, processor, dataset, columns, batch_size, progress)
    return {"metrics": retrieval_metrics(similarity, owners), "details": {"num_captions": len(owners)}}


def classification_scores(
    model, processor, dataset, columns: dict, batch_size: int, progress: bool, template: str
) -> tuple[np.ndarray, list[int], list[str]]:
    """The classification task's float64 clip-by-class cosines `(num_clips, num_classes)` (class prompts from
    `template`), each clip's class index and the class names."""
    label_column = _column(dataset, columns["label"], "classification", "label")
    references, classes = class_indices(list(dataset[label_column]), class_names_of(dataset, label_column))
    text = text_embeddings(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size, progress)
    return (audio.double() @ text.double().t()).numpy(), references, classes


def evaluate_classification(
    model, processor, dataset, columns: dict, batch_size: int, progress: bool, template: str, folds
) -> dict:
    _column(dataset, columns["label"], "classification", "label")
    metric = load_metric(
        "audio_classification_accuracy"
    )  # before the embedding: a broken install fails at once
    scores, references, classes = classification_scores(
        model, processor, dataset, columns, batch_size, progress, template
    )
    fold_values = None if folds is None else dataset[_column(dataset, folds, "classification", "fold")]
    metrics = metric.compute(
        predictions=scores.tolist(), references=references, top_k=(1, 5), folds=fold_values
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def evaluate_tagging(
    model, processor, dataset, columns: dict, batch_size: int, progress: bool, template: str
) -> dict:
    labels_column = _column(dataset, columns["labels"], "tagging", "labels")
    metric = load_metric("audio_tagging_map")  # before the embedding: a broken install fails at once
    label_lists = [[str(v) for v in row] for row in dataset[labels_column]]
    classes = sorted({label for row in label_lists for label in row})
    text = text_embeddings(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size, progress)
    scores = (audio.double() @ text.double().t()).numpy()
    targets = [[int(c in row) for c in classes] for row in label_lists]
    metrics = metric.compute(predictions=scores.tolist(), references=targets, class_names=classes)
    return {"metrics": metrics, "details": {"classes": classes}}


def _kept_rows(dataset, validated: ValidatedReferences):
    """The rows validation kept (all of them unless rows were skipped)."""
    if not validated.rows:
        raise ValueError("Every row has an invalid reference: nothing to evaluate.")
    return dataset.select(validated.rows) if validated.skipped else dataset


def evaluate_sed(
    model,
    processor,
    dataset,
    columns: dict,
    batch_size: int,
    progress: bool,
    template: str,
    plots: int,
    out: Path,
    skip_invalid: bool,
    psds_diagnostics: bool = False,
):
    events_column = _column(dataset, columns["events"], "sed", "events")
    metric = load_metric("sound_event_detection")  # before the embedding: a broken install fails at once
    validated = validate_sed_events(dataset, events_column, columns["audio"], skip_invalid)
    dataset = _kept_rows(dataset, validated)
    events, classes = validated.references, validated.classes
    if not classes:
        raise ValueError("No reference events in the dataset: nothing to evaluate.")
    text = text_embeddings(
        model, processor, [prompt_text(c, template, lower=True) for c in classes], batch_size
    )
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration in iterate_frame_scores(
        model, processor, dataset, columns["audio"], batch_size, lambda _: text, progress
    ):
        predictions.append(scores.numpy().tolist())
        timestamps.append(boundaries.numpy().tolist())
        durations.append(duration)
        if index < plots:
            plot_frame_similarity(
                out / f"sed_{index:04d}.png", scores, boundaries, classes, events[index], f"example {index}"
            )
    metrics = metric.compute(
        predictions=predictions,
        references=events,
        timestamps=timestamps,
        durations=durations,
        event_classes=classes,
        metrics=SED_METRICS + (SED_DIAGNOSTICS if psds_diagnostics else ()),
    )
    return {"metrics": metrics, "details": {"classes": classes, "validation": validated.summary()}}


def evaluate_grounding(
    model,
    processor,
    dataset,
    columns: dict,
    batch_size: int,
    progress: bool,
    template: str,
    plots: int,
    out: Path,
    skip_invalid: bool,
):
    phrase_column = _column(dataset, columns["phrase"], "grounding", "phrase")
    segments_column = _column(dataset, columns["segments"], "grounding", "segments")
    metric = load_metric("text_to_audio_grounding")  # before the embedding: a broken install fails at once
    validated = validate_grounding_segments(
        dataset, phrase_column, segments_column, columns["audio"], skip_invalid
    )
    dataset = _kept_rows(dataset, validated)
    segments = validated.references
    phrases = [prompt_text(p, template) for p in dataset[phrase_column]]
    text = text_embeddings(model, processor, phrases, batch_size, progress)
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration in iterate_frame_scores(
        model, processor, dataset, columns["audio"], batch_size, lambda i: text[i : i + 1], progress
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
    metrics = metric.compute(
        predictions=predictions, references=segments, timestamps=timestamps, durations=durations
    )
    return {"metrics": metrics, "details": {"validation": validated.summary()}}


def evaluate_temporal_task(
    model, processor, dataset, columns: dict, batch_size: int, progress: bool, num_pairs: int
) -> dict:
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
        progress=progress,
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
    skip_invalid_events: bool = False,
    psds_diagnostics: bool = False,
    progress: bool = False,
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
        skip_invalid_events (`bool`): SED / grounding: leave out the rows with an invalid reference event or segment
            (counted in `details["validation"]`) instead of raising an
            [`~evaluation.validation.InvalidReferenceError`].
        psds_diagnostics (`bool`): SED: also `psds1_alpha_st0` / `psds2_alpha_st0`, the PSDS scenarios without the
            penalty on the across-class spread of the TPR: diagnostics next to the standard PSDS, never instead.
        progress (`bool`): progress bars (clips, texts, windows of long clips, temporal draws) on stderr.

    Raises:
        [`~utils.cli.MissingExtraError`]: the task's metric (or plotting) packages are not installed; raised before
            any clip is embedded, with the install line of the `eval` extra.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    require_extra("eval", required_modules(task, num_plots), f"The {task} task")
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    _column(dataset, columns["audio"], task, "audio")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    template = prompt_template or DEFAULT_PROMPTS.get(task, "{}")
    common = (model, processor, dataset, columns, batch_size, progress)
    if task == "retrieval":
        return evaluate_retrieval(*common)
    if task == "classification":
        return evaluate_classification(*common, template, fold_column)
    if task == "tagging":
        return evaluate_tagging(*common, template)
    if task == "sed":
        return evaluate_sed(
            *common, template, num_plots, Path(plots_dir), skip_invalid_events, psds_diagnostics
        )
    if task == "grounding":
        return evaluate_grounding(*common, template, num_plots, Path(plots_dir), skip_invalid_events)
    return evaluate_temporal_task(*common, num_temporal_pairs)


__all__ = [
    "DEFAULT_COLUMNS",
    "DEFAULT_PROMPTS",
    "METRIC_MODULES",
    "TASKS",
    "evaluate_task",
    "load_metric",
    "prompt_text",
    "required_modules",
]
