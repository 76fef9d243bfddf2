#!/usr/bin/env python
"""Zero-shot evaluation of an MGA-CLAP (or any saved MGA-CLAP-format) model, as the official protocols.

    python examples/evaluate_zero_shot.py --model_name_or_path outputs/mgaclap-pretrain --task sed
    python examples/evaluate_zero_shot.py --model_name_or_path <repo> --task classification \\
        --dataset_name ashraq/esc50 --split train --label_column category --fold_column fold

Tasks and the dataset columns they read (names overridable by flags):

| task | columns | prompts | metrics |
|---|---|---|---|
| retrieval | `audio` + `caption` (str) or `captions` (list) | the captions | R@1/5/10/50, mAP@10, medR (both directions) |
| classification | `audio` + `label` (str or ClassLabel) | "{} can be heard" | accuracy (mean over `--fold_column` folds) |
| tagging | `audio` + `labels` (list) | "{}" | mAP over classes |
| sed | `audio` + `events` (`{"event_label", "onset", "offset"}`, s) | "{}" | PSDS1, PSDS2, collar / segment F1 |
| grounding | `audio` + `phrase` + `segments` (`[[onset, offset], ...]`) | the phrase | PSDS at 0.7 / 0.1 / 0.5 (PSDSm) |
| temporal | `audio` + `label` (single-sound clips, ESC-50 style) | "a before b", ... | ZSTE accuracy per relation, order |

`temporal` (TeminAL's zero-shot temporal evaluation, `transformers_mgaclap.temporal.evaluate_temporal`) builds
composite clips from pairs of labelled clips ("a then b", the overlay, "a" alone) and picks the best of the order,
reversed-order, simultaneous and single captions; run `classification` / `retrieval` too to see the coarse tasks.

Labels are prompted as the official scripts do: `_` becomes a space (SED also lower-cases). Evaluation is
deterministic: clips longer than 10 s are cut from the start for the clip-level tasks (the official retrieval loader
crops at random; this does not), and go through the 10 s sliding-window path for SED / grounding (the official
scripts truncate). Shorter clips are zero-padded (masked) for retrieval / classification / tagging and repeat-padded
for SED / grounding, as the official scripts. SED scores are raw frame-text cosines, grounding scores their sigmoid.

Without `--dataset_name` the task runs on a held-out set of the package's synthetic soundscapes (offline). Writes
`results.json` (metric name -> value), `results.md` (a table with the run's settings), `details.json` (per-class
figures) and, for SED / grounding, PNG plots of frame-level similarity against the reference events.
"""

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METRICS_DIR = Path(__file__).resolve().parents[1] / "metrics"
SAMPLING_RATE = 32000
TASKS = ("retrieval", "classification", "tagging", "sed", "grounding", "temporal")
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


# ----------------------------------------------------------------------------------------------------- data


def synthetic_dataset(task: str, num_clips: int = 200, seed: int = 1234):
    """A held-out synthetic set in `task`'s schema: the soundscape generator's "test" stream (never trained on).

    classification uses single-event clips; grounding has one row per (clip, class present) with the class's first
    descriptive phrase ("a siren wails") as the query and all that class's events as its segments.
    """
    from transformers_mgaclap.soundscapes import build_soundscape_dataset, get_sound_event_class

    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    if task == "temporal":
        from transformers_mgaclap.temporal import build_labelled_clip_dataset

        return build_labelled_clip_dataset(max(2, num_clips // 16), seed, "test")
    single = task == "classification"
    dataset = build_soundscape_dataset(
        num_clips,
        seed,
        "test",
        min_events_per_clip=1,
        max_events_per_clip=1 if single else 3,
    )
    if single:
        return dataset.map(lambda row: {"label": row["labels"][0]})
    if task != "grounding":
        return dataset

    def per_phrase(batch):
        rows = {"audio": [], "phrase": [], "segments": [], "clip_id": []}
        for audio, events, clip_id in zip(batch["audio"], batch["events"], batch["clip_id"], strict=True):
            for label in sorted({event["event_label"] for event in events}):
                rows["audio"].append(audio)
                rows["phrase"].append(get_sound_event_class(label).phrases[0])
                rows["segments"].append(
                    [[e["onset"], e["offset"]] for e in events if e["event_label"] == label]
                )
                rows["clip_id"].append(clip_id)
        return rows

    import datasets

    raw = dataset.cast_column("audio", datasets.Audio(decode=False))
    grounding = raw.map(per_phrase, batched=True, remove_columns=raw.column_names)
    return grounding.cast_column("audio", datasets.Audio(sampling_rate=SAMPLING_RATE))


def load_eval_dataset(name: str, config_name: str | None = None, split: str = "test"):
    """A Hub id, a `save_to_disk` folder (Dataset or DatasetDict) or any folder `load_dataset` reads."""
    import datasets

    if os.path.isdir(name) and any(
        os.path.exists(os.path.join(name, marker)) for marker in ("state.json", "dataset_dict.json")
    ):
        loaded = datasets.load_from_disk(name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"Split {split!r} not in {name!r}; it has {list(loaded)}.")
            loaded = loaded[split]
        return loaded
    return datasets.load_dataset(name, config_name, split=split)


class AudioDecoder:
    """Decode dataset audio cells (path / bytes) to 32 kHz mono float32, naming the clip on failure."""

    def __init__(self):
        import datasets

        self.feature = datasets.Audio(sampling_rate=SAMPLING_RATE)

    def __call__(self, cell: dict, index: int) -> np.ndarray:
        try:
            waveform = np.asarray(self.feature.decode_example(cell)["array"], dtype=np.float32)
        except Exception as error:  # noqa: BLE001 - any decoder failure means the same: an unusable clip
            name = cell.get("path") if isinstance(cell, dict) else None
            raise ValueError(
                f"Cannot decode the audio of example {index} ({name or 'no path'}): {error}"
            ) from error
        if waveform.ndim > 1:  # (channels, samples) -> mono, as the official scripts (channel mean)
            waveform = waveform.mean(axis=0)
        if waveform.size == 0 or not np.isfinite(waveform).all():
            raise ValueError(f"The audio of example {index} is empty or not finite.")
        return waveform


def _column(dataset, name: str | None, task: str, what: str) -> str:
    if name is None or name not in dataset.column_names:
        raise ValueError(
            f"The {task} task needs a {what} column {name!r}; the dataset has {dataset.column_names} "
            f"(choose another with --{what}_column)."
        )
    return name


def prompt_text(label: str, template: str, lower: bool = False) -> str:
    text = str(label).replace("_", " ")
    return template.format(text.lower() if lower else text)


# ----------------------------------------------------------------------------------------------------- embedding


@torch.no_grad()
def embed_texts(model, processor, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """(N, D) normalised global text embeddings."""
    device = model.device
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = processor(text=list(texts[start : start + batch_size]), padding=True, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        chunks.append(model.get_text_features(**inputs).pooler_output.float().cpu())
    return torch.cat(chunks)


@torch.no_grad()
def embed_audio(model, processor, waveforms: Sequence[np.ndarray], padding_mode: str = "zero"):
    """(B, D) normalised global embeddings, (B, T, D) normalised frames and the (B, T) frame mask of a batch."""
    features = processor(
        audio=list(waveforms),
        sampling_rate=SAMPLING_RATE,
        padding_mode=padding_mode,
        truncation_mode="start",
        return_tensors="pt",
    )
    outputs = model.get_audio_features(
        input_features=features["input_features"].to(model.device, model.dtype),
        input_features_mask=features["input_features_mask"].to(model.device),
    )
    frames = F.normalize(outputs.last_hidden_state.float(), dim=-1).cpu()
    return outputs.pooler_output.float().cpu(), frames, outputs.local_mask.cpu()


def iterate_audio(dataset, audio_column: str, batch_size: int):
    """Yield (indices, waveforms) batches in dataset order."""
    import datasets

    decoder = AudioDecoder()
    undecoded = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        cells = undecoded[start:stop][audio_column]
        yield list(range(start, stop)), [decoder(cell, start + k) for k, cell in enumerate(cells)]


def clip_embeddings(model, processor, dataset, audio_column: str, batch_size: int) -> torch.Tensor:
    chunks = [
        embed_audio(model, processor, waves)[0]
        for _, waves in iterate_audio(dataset, audio_column, batch_size)
    ]
    return torch.cat(chunks)


def frame_scores(model, processor, waveform: np.ndarray, text_embeds: torch.Tensor, frames=None):
    """(T, Q) frame-text cosines and (T + 1,) boundaries in seconds for one clip of any length.

    Up to 10 s: the repeat-padded clip's frames (precomputed `frames` if given), cut at the clip's end. Longer:
    the sliding-window path of `transformers_mgaclap.sound_event_detection`.
    """
    from transformers_mgaclap.sound_event_detection import compute_long_audio_frame_similarity

    extractor = processor.feature_extractor
    duration = len(waveform) / SAMPLING_RATE
    if duration > extractor.max_length_s:
        stitched = compute_long_audio_frame_similarity(
            model, waveform, None, extractor, progress=False, text_embeds=text_embeds
        )
        return stitched.frame_similarity.double(), stitched.frame_boundaries
    if frames is None:
        frames = embed_audio(model, processor, [waveform], padding_mode="repeatpad")[1][0]
    step = extractor.max_length_s / frames.shape[0]
    num_frames = min(frames.shape[0], math.ceil(duration / step - 1e-9))
    scores = frames[:num_frames].double() @ text_embeds.double().t()
    boundaries = (torch.arange(num_frames + 1, dtype=torch.float64) * step).clamp(max=duration)
    return scores, boundaries


# ----------------------------------------------------------------------------------------------------- tasks


def load_metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


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
    text = embed_texts(model, processor, captions, batch_size)
    similarity = (text.double() @ audio.double().t()).numpy()
    metrics = load_metric("audio_text_retrieval").compute(predictions=similarity.tolist(), references=owners)
    return {"metrics": metrics, "details": {"num_captions": len(captions)}}


def class_names_of(values, feature=None) -> tuple[list[str], list]:
    """Class names and the per-example label names (ClassLabel ints mapped to their names)."""
    names = getattr(feature, "names", None)
    if names is not None:
        return list(names), [names[v] for v in values]
    return sorted({str(v) for v in values}), [str(v) for v in values]


def evaluate_classification(
    model, processor, dataset, columns: dict, batch_size: int, template: str, folds
) -> dict:
    label_column = _column(dataset, columns["label"], "classification", "label")
    classes, labels = class_names_of(dataset[label_column], dataset.features.get(label_column))
    text = embed_texts(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size)
    scores = (audio.double() @ text.double().t()).numpy()
    index = {name: k for k, name in enumerate(classes)}
    references = [index[label] for label in labels]
    fold_values = None if folds is None else dataset[_column(dataset, folds, "classification", "fold")]
    metrics = load_metric("audio_classification_accuracy").compute(
        predictions=scores.tolist(), references=references, top_k=(1, 5), folds=fold_values
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def evaluate_tagging(model, processor, dataset, columns: dict, batch_size: int, template: str) -> dict:
    labels_column = _column(dataset, columns["labels"], "tagging", "labels")
    label_lists = [[str(v) for v in row] for row in dataset[labels_column]]
    classes = sorted({label for row in label_lists for label in row})
    text = embed_texts(model, processor, [prompt_text(c, template) for c in classes], batch_size)
    audio = clip_embeddings(model, processor, dataset, columns["audio"], batch_size)
    scores = (audio.double() @ text.double().t()).numpy()
    targets = [[int(c in row) for c in classes] for row in label_lists]
    metrics = load_metric("audio_tagging_map").compute(
        predictions=scores.tolist(), references=targets, class_names=classes
    )
    return {"metrics": metrics, "details": {"classes": classes}}


def _frame_level(model, processor, dataset, audio_column: str, batch_size: int, text_for_row):
    """Per row: (scores (T, Q) for the queries `text_for_row(index)` picks, boundaries, duration, waveform)."""
    for indices, waveforms in iterate_audio(dataset, audio_column, batch_size):
        # Clips up to 10 s are embedded as one batch; longer ones go through the windowed path one by one.
        limit = processor.feature_extractor.max_length_s * SAMPLING_RATE
        short = [k for k, w in enumerate(waveforms) if len(w) <= limit]
        frames_of = {}
        if short:
            frames = embed_audio(model, processor, [waveforms[k] for k in short], padding_mode="repeatpad")[1]
            frames_of = dict(zip(short, frames, strict=True))
        for position, (index, waveform) in enumerate(zip(indices, waveforms, strict=True)):
            scores, boundaries = frame_scores(
                model, processor, waveform, text_for_row(index), frames=frames_of.get(position)
            )
            yield index, scores, boundaries, len(waveform) / SAMPLING_RATE, waveform


def evaluate_sed(
    model, processor, dataset, columns: dict, batch_size: int, template: str, plots: int, out: Path
):
    events_column = _column(dataset, columns["events"], "sed", "events")
    events = [[dict(e) for e in row] for row in dataset[events_column]]
    classes = sorted({e["event_label"] for row in events for e in row})
    if not classes:
        raise ValueError("No reference events in the dataset: nothing to evaluate.")
    text = embed_texts(model, processor, [prompt_text(c, template, lower=True) for c in classes], batch_size)
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration, _ in _frame_level(
        model, processor, dataset, columns["audio"], batch_size, lambda _: text
    ):
        predictions.append(scores.numpy())
        timestamps.append(boundaries.numpy())
        durations.append(duration)
        if index < plots:
            plot_frame_similarity(
                out / f"sed_{index:04d}.png", scores, boundaries, classes, events[index], f"example {index}"
            )
    metrics = load_metric("sound_event_detection").compute(
        predictions=[p.tolist() for p in predictions],
        references=events,
        timestamps=[t.tolist() for t in timestamps],
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
    text = embed_texts(model, processor, phrases, batch_size)
    segments = [[list(map(float, s)) for s in row] for row in dataset[segments_column]]
    predictions, timestamps, durations = [], [], []
    for index, scores, boundaries, duration, _ in _frame_level(
        model, processor, dataset, columns["audio"], batch_size, lambda i: text[i : i + 1]
    ):
        probabilities = torch.sigmoid(scores[:, 0])  # the official grounding score
        predictions.append(probabilities.tolist())
        timestamps.append(boundaries.tolist())
        durations.append(duration)
        if index < plots:
            reference = [{"event_label": phrases[index], "onset": a, "offset": b} for a, b in segments[index]]
            plot_frame_similarity(
                out / f"grounding_{index:04d}.png",
                scores,
                boundaries,
                [phrases[index]],
                reference,
                f"query {index}",
            )
    metrics = load_metric("text_to_audio_grounding").compute(
        predictions=predictions, references=segments, timestamps=timestamps, durations=durations
    )
    return {"metrics": metrics, "details": {}}


def plot_frame_similarity(path: Path, scores, boundaries, queries, reference_events, title: str) -> None:
    """Frame-level cosine per query (steps) over the reference events (shaded), like the paper's Figures 1 and 8."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


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
    """Run one task; returns `{"metrics": {name: value, ...}, "details": {...}}`."""
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    _column(dataset, columns["audio"], task, "audio")
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    template = prompt_template or DEFAULT_PROMPTS.get(task, "{}")
    if task == "retrieval":
        return evaluate_retrieval(model, processor, dataset, columns, batch_size)
    if task == "classification":
        return evaluate_classification(model, processor, dataset, columns, batch_size, template, fold_column)
    if task == "tagging":
        return evaluate_tagging(model, processor, dataset, columns, batch_size, template)
    if task == "sed":
        return evaluate_sed(
            model, processor, dataset, columns, batch_size, template, num_plots, Path(plots_dir)
        )
    if task == "grounding":
        return evaluate_grounding(
            model, processor, dataset, columns, batch_size, template, num_plots, Path(plots_dir)
        )
    if task == "temporal":
        from transformers_mgaclap.temporal import evaluate_temporal

        label_column = _column(dataset, columns["label"], "temporal", "label")
        metrics = evaluate_temporal(
            model,
            processor,
            dataset,
            num_pairs=num_temporal_pairs,
            batch_size=batch_size,
            audio_column=columns["audio"],
            label_column=label_column,
        )
        return {"metrics": metrics, "details": {}}
    raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")


# ----------------------------------------------------------------------------------------------------- script


def scalar_metrics(metrics: dict) -> tuple[dict, dict]:
    """Split metric outputs into scalars (results.json) and structured values (details.json)."""
    scalars = {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))
    }
    rest = {k: v for k, v in metrics.items() if k not in scalars}
    return scalars, rest


def markdown_report(task: str, scalars: dict, settings: dict) -> str:
    lines = [f"# Zero-shot {task}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in scalars.items()]
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", default="outputs/mgaclap-pretrain")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument(
        "--dataset_name", default=None, help="Hub id or local folder; none = synthetic held-out set"
    )
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max_samples", type=int, default=None, help="evaluate the first N examples only")
    for name in DEFAULT_COLUMNS:
        parser.add_argument(f"--{name}_column", default=DEFAULT_COLUMNS[name])
    parser.add_argument("--fold_column", default=None, help="classification: mean of the per-fold accuracies")
    parser.add_argument("--prompt_template", default=None, help="default: the official one for the task")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--num_plots", type=int, default=4, help="SED / grounding: PNG plots of the first N rows"
    )
    parser.add_argument("--num_temporal_pairs", type=int, default=100, help="temporal: class-pair draws")
    parser.add_argument("--synthetic_clips", type=int, default=200)
    parser.add_argument(
        "--output_dir", default=None, help="default: <model>/eval_<task> or outputs/eval_<task>"
    )
    parser.add_argument("--device", default=None, help="default: cuda if available")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from transformers import AutoModel, AutoProcessor

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(args.model_name_or_path, trust_remote_code=True).to(device).eval()
    processor = AutoProcessor.from_pretrained(args.model_name_or_path, trust_remote_code=True)
    if args.dataset_name is None:
        dataset, source = (
            synthetic_dataset(args.task, args.synthetic_clips),
            "synthetic soundscapes (test stream)",
        )
    else:
        dataset = load_eval_dataset(args.dataset_name, args.dataset_config_name, args.split)
        source = f"{args.dataset_name} [{args.split}]"
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    output_dir = Path(args.output_dir or Path("outputs") / f"eval_{args.task}")
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = {name: getattr(args, f"{name}_column") for name in DEFAULT_COLUMNS}
    results = evaluate_task(
        model,
        processor,
        dataset,
        args.task,
        columns=columns,
        prompt_template=args.prompt_template,
        fold_column=args.fold_column,
        batch_size=args.batch_size,
        num_plots=args.num_plots,
        plots_dir=output_dir / "plots",
        num_temporal_pairs=args.num_temporal_pairs,
    )
    scalars, structured = scalar_metrics(results["metrics"])
    settings = {
        "model": args.model_name_or_path,
        "dataset": source,
        "examples": len(dataset),
        "prompt template": args.prompt_template or DEFAULT_PROMPTS.get(args.task, "the captions / phrases"),
    }
    (output_dir / "results.json").write_text(json.dumps(scalars, indent=2) + "\n")
    (output_dir / "details.json").write_text(
        json.dumps({"settings": settings, **structured, **results["details"]}, indent=2, default=str) + "\n"
    )
    (output_dir / "results.md").write_text(markdown_report(args.task, scalars, settings))
    print(markdown_report(args.task, scalars, settings))
    return scalars


if __name__ == "__main__":
    main()
