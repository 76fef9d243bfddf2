"""Audio-caption data for training: loading `datasets` sources, caption normalisation, the training collator.

Audio is kept undecoded (`Audio(decode=False)`) in the datasets and decoded by the collator, inside DataLoader
workers: decoding, resampling and feature extraction run in parallel with the training step, and an unreadable
file can be skipped (and counted) instead of killing the run.
"""

import logging
import re
import zlib
from collections.abc import Sequence

import numpy as np

from ..audio_input import load_audio
from .sources import load_dataset_source

logger = logging.getLogger(__name__)

AUDIO = "audio"
CAPTIONS = "captions"
DURATION = "duration"


def normalize_caption(caption: str) -> str:
    """The official caption pre-processing (WavCaps `text_preprocess`, docs/official-implementation.md §5).

    Lower-case; drop a space before `, . ! ? ; : "` when whitespace or the end follows; then turn each of
    `( , . ! ? ; : | * " )` into a space. Each step ends with one pass of double-space -> single space, as the
    original (longer runs are only partly collapsed, nothing is stripped).
    """
    caption = caption.lower()
    caption = re.sub(r'\s([,.!?;:"](?:\s|$))', r"\1", caption).replace("  ", " ")
    return re.sub(r'[(,.!?;:|*")]', " ", caption).replace("  ", " ")


def _as_caption_list(value) -> list[str]:
    """A caption cell (a string or a list of strings) -> its non-empty captions."""
    captions = [value] if isinstance(value, str) else list(value or [])
    return [c for c in captions if isinstance(c, str) and c.strip()]


def _row_captions(row: dict, columns: Sequence[str]) -> list[str]:
    """The non-empty captions of a row's caption columns, in column order: several string columns give the list one
    list column would hold (a caption repeated stays repeated, as in a list)."""
    return [caption for column in columns for caption in _as_caption_list(row[column])]


TEXT_AUGMENT_SELECTIONS = ("none", "all", "augment_only")


def select_captions(original, augmented, selection: str = "none") -> list[str]:
    """LAION-CLAP's `select_text` (`--text-augment-selection`) for one row.

    `"none"`: the original captions; `"all"`: the original captions and the augmented ones (keyword-to-caption,
    [`~keyword_to_caption.augment_dataset`]), without duplicates; `"augment_only"`: the augmented captions, or the
    original ones where there are none.
    """
    if selection not in TEXT_AUGMENT_SELECTIONS:
        raise ValueError(
            f"`text_augment_selection` must be one of {TEXT_AUGMENT_SELECTIONS}, got {selection!r}."
        )
    original, augmented = _as_caption_list(original), _as_caption_list(augmented)
    if selection == "none":
        return original
    if selection == "augment_only":
        return augmented or original
    return list(dict.fromkeys(original + augmented))


def load_audio_caption_dataset(
    names: Sequence[str],
    split: str = "train",
    config_name: str | None = None,
    audio_column: str = "audio",
    caption_column: str | Sequence[str] = "caption",
    streaming: bool = False,
    probabilities: Sequence[float] | None = None,
    seed: int = 0,
    duration_column: str | None = None,
    text_augment_selection: str = "none",
    augmented_caption_column: str = "caption_aug",
):
    """Load, standardise and combine audio-caption datasets.

    Each source is a Hub id, a local `save_to_disk` folder, an `audiofolder` directory or a `datasets.Dataset`
    already in memory. The result has two
    columns: `audio` (undecoded: `{"bytes", "path"}`) and `captions` (a non-empty list of strings; a string column
    becomes a one-element list, Clotho-style lists are kept). With several caption columns (the Hub's Clotho:
    `caption_1` ... `caption_5`), a row's captions are those of all of them, in column order. Rows without any
    non-empty caption are dropped.
    Several sources are concatenated, or interleaved with `probabilities`. With `duration_column`, that column is
    kept as `duration` (seconds), for [`DurationBucketBatchSampler`]. `text_augment_selection` (`"none"`, `"all"`,
    `"augment_only"`) mixes in the keyword-to-caption captions of `augmented_caption_column`, see
    [`select_captions`].

    Raises:
        ValueError: a named column is missing (the message lists the columns that exist).
    """
    import datasets

    if text_augment_selection not in TEXT_AUGMENT_SELECTIONS:
        raise ValueError(
            f"`text_augment_selection` must be one of {TEXT_AUGMENT_SELECTIONS}, got {text_augment_selection!r}."
        )
    caption_columns = [caption_column] if isinstance(caption_column, str) else list(caption_column)
    parts = []
    for name in names:
        dataset = load_dataset_source(name, split, config_name, streaming)
        columns = list(dataset.column_names or dataset.features or [])
        kept = [audio_column, *caption_columns] + ([duration_column] if duration_column else [])
        if text_augment_selection != "none":
            kept.append(augmented_caption_column)
        for column in kept:
            if column not in columns:
                raise ValueError(
                    f"Dataset {name!r} ({split}) has no column {column!r}; its columns are {columns}."
                )
        dataset = dataset.select_columns(kept)
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
        dataset = dataset.map(
            lambda row: {
                CAPTIONS: select_captions(
                    _row_captions(row, caption_columns),
                    row[augmented_caption_column] if text_augment_selection != "none" else None,
                    text_augment_selection,
                )
            }
        )
        dataset = dataset.filter(lambda row: len(row[CAPTIONS]) > 0)
        if audio_column != AUDIO:
            dataset = dataset.rename_column(audio_column, AUDIO)
        if duration_column and duration_column != DURATION:
            dataset = dataset.rename_column(duration_column, DURATION)
        parts.append(dataset.select_columns([AUDIO, CAPTIONS] + ([DURATION] if duration_column else [])))
    if len(parts) == 1:
        return parts[0]
    if probabilities is not None:
        return datasets.interleave_datasets(
            parts, probabilities=list(probabilities), seed=seed, stopping_strategy="all_exhausted"
        )
    return datasets.concatenate_datasets(parts)


def _example_key(example: dict) -> int:
    """A stable integer per example (from its audio bytes or path and its captions), for keyed randomness."""
    audio = example[AUDIO]
    payload = (audio.get("path") or "").encode() + (audio.get("bytes") or b"")[:4096]
    return zlib.crc32(payload + "\x1f".join(example[CAPTIONS]).encode())


class DurationBucketBatchSampler:
    """Batches of clips of similar duration, as the official training (`bucket_boundaries=(5, 30, 6)`).

    Clips fall into buckets by duration (edges 5, 10, ..., 30 s by default; shorter and longer clips get buckets of
    their own); each bucket is shuffled and cut into batches, the remainder of each bucket is dropped (as the
    official sampler), and the batches are shuffled. The order is a function of `(seed, epoch)`: call `set_epoch`.
    With features of a fixed 10 s, this groups clips by how much of each input is real audio rather than padding.

    Args:
        durations (`Sequence[float]`): seconds per dataset row.
        batch_size (`int`): clips per batch.
        bucket_edges (`Sequence[float]`): bucket boundaries in seconds.
        seed (`int`): base of the shuffling.
    """

    def __init__(
        self, durations: Sequence[float], batch_size: int, bucket_edges=(5, 10, 15, 20, 25, 30), seed: int = 0
    ):
        self.buckets = np.digitize(np.asarray(durations, dtype=np.float64), np.asarray(bucket_edges))
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for bucket in np.unique(self.buckets):
            members = rng.permutation(np.flatnonzero(self.buckets == bucket))
            usable = len(members) - len(members) % self.batch_size
            batches += [members[i : i + self.batch_size].tolist() for i in range(0, usable, self.batch_size)]
        for index in rng.permutation(len(batches)):
            yield batches[index]

    def __len__(self) -> int:
        return int((np.bincount(self.buckets) // self.batch_size).sum())


class AudioCaptionCollator:
    """Decode, crop and featurise a list of `{"audio", "captions"}` examples into MGA-CLAP model inputs.

    Random choices (which caption, which 10 s crop) are a function of `(seed, epoch, example)` rather than of a
    global random state, so a run resumed from a checkpoint sees exactly the batches the uninterrupted run saw,
    whichever worker builds them.

    Args:
        processor ([`MGAClapProcessor`]): feature extractor + tokenizer.
        train (`bool`): sample one caption and a random 10 s crop per clip. Otherwise keep every caption (the
            batch then has more captions than clips and a `text_to_audio` index) and the deterministic crop.
        normalize (`bool`): apply [`normalize_caption`] (the official training pre-processing).
        strict (`bool`): raise on an unreadable audio file (naming it) instead of skipping it with a warning.
        seed (`int`): base of the keyed randomness; set `epoch` before each epoch.
    """

    def __init__(
        self, processor, train: bool = True, normalize: bool = True, strict: bool = False, seed: int = 0
    ):
        self.processor = processor
        self.train = train
        self.normalize = normalize
        self.strict = strict
        self.seed = seed
        self.epoch = 0

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        waveforms, captions, text_to_audio, skipped = [], [], [], []
        for example in examples:
            name = example[AUDIO].get("path") or "<bytes>"
            try:
                waveform, _ = load_audio(
                    example[AUDIO], target_rate=self.processor.feature_extractor.sampling_rate
                )
            except Exception as error:  # noqa: BLE001 - any decoder failure means the same: unusable file
                if self.strict:
                    raise ValueError(f"Cannot decode audio file {name!r}: {error}") from error
                logger.warning("Skipping unreadable audio %r: %s", name, error)
                skipped.append(name)
                continue
            rng = np.random.default_rng([self.seed, self.epoch, _example_key(example)])
            options = example[CAPTIONS]
            chosen = [options[rng.integers(len(options))]] if self.train else options
            text_to_audio += [len(waveforms)] * len(chosen)
            waveforms.append(waveform)
            captions += [normalize_caption(c) if self.normalize else c for c in chosen]
        if not waveforms:
            return {"num_skipped": torch.tensor(len(skipped))}
        crop = {}
        if self.train:
            crop = {
                "truncation_mode": "random",
                "generator": torch.Generator().manual_seed(int(rng.integers(2**62))),
            }
        batch = self.processor(
            text=captions,
            audio=waveforms,
            sampling_rate=self.processor.feature_extractor.sampling_rate,
            return_tensors="pt",
            **crop,
        )
        batch = dict(batch)
        batch["num_skipped"] = torch.tensor(len(skipped))
        if not self.train:
            batch["text_to_audio"] = torch.tensor(text_to_audio)
        return batch


__all__ = [
    "AudioCaptionCollator",
    "DurationBucketBatchSampler",
    "load_audio_caption_dataset",
    "normalize_caption",
    "select_captions",
]
