"""Held-out synthetic evaluation sets in each task's schema, from the soundscape generator's "test" stream."""

from ..data.soundscapes import build_labelled_clip_dataset, build_soundscape_dataset, get_sound_event_class

TASKS = ("retrieval", "classification", "tagging", "sed", "grounding", "temporal")
SAMPLING_RATE = 32000


def synthetic_dataset(task: str, num_clips: int = 200, seed: int = 1234, progress: bool = False):
    """A held-out synthetic set in `task`'s schema: the soundscape generator's "test" stream (never trained on).

    classification uses single-event clips; grounding has one row per (clip, class present) with the class's first
    descriptive phrase ("a siren wails") as the query and all that class's events as its segments; temporal uses
    single-event labelled clips (`num_clips // 16` per class). `progress`: a bar in clips while they are synthesised.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    if task == "temporal":
        return build_labelled_clip_dataset(max(2, num_clips // 16), seed, "test", progress=progress)
    single = task == "classification"
    dataset = build_soundscape_dataset(
        num_clips,
        seed,
        "test",
        min_events_per_clip=1,
        max_events_per_clip=1 if single else 3,
        progress=progress,
    )
    if single:
        return dataset.map(lambda row: {"label": row["labels"][0]})
    if task == "grounding":
        return _one_row_per_phrase(dataset)
    return dataset


def _one_row_per_phrase(dataset):
    import datasets

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

    raw = dataset.cast_column("audio", datasets.Audio(decode=False))
    grounding = raw.map(per_phrase, batched=True, remove_columns=raw.column_names)
    return grounding.cast_column("audio", datasets.Audio(sampling_rate=SAMPLING_RATE))


__all__ = ["TASKS", "synthetic_dataset"]
