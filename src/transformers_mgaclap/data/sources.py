"""The one dataset loader (whatever a user passes as `--dataset_name` becomes a `datasets` object) and the one way to
read a dataset's audio column (through the package's audio input layer).

Used by pre-training, the evaluation, TeminAL post-training, few-shot recognition and keyword-to-caption.
"""

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..audio_input import load_audio


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    path = os.fspath(path)
    markers = ("state.json", "dataset_info.json", "dataset_dict.json")
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, marker)) for marker in markers)


def load_dataset_source(
    source: Any,
    split: str = "train",
    config_name: str | None = None,
    streaming: bool = False,
):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) from a Hub id, a folder or an object.

    Args:
        source: a `Dataset` / `IterableDataset` (returned as is); a `DatasetDict` (its `split`); a folder written by
            `save_to_disk` (a saved `DatasetDict` gives its `split`); any other folder `load_dataset` reads (an
            `audiofolder` of audio files with an optional `metadata.csv`, parquet, csv, json...); or a Hub dataset id.
        split (`str`): the split of a Hub dataset, a `DatasetDict` or a folder with splits.
        config_name (`str`, *optional*): the Hub dataset's configuration.
        streaming (`bool`): stream a Hub dataset or a data folder instead of downloading it first.

    Raises:
        `ValueError`: a `DatasetDict` without `split` (the message lists its splits).
    """
    import datasets

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        return source
    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return _split_of(source, split, "the dataset")
    name = os.fspath(source)
    if is_saved_dataset(name):
        return _split_of(datasets.load_from_disk(name), split, name)
    return datasets.load_dataset(name, config_name, split=split, streaming=streaming)


def _split_of(loaded, split: str, name: str):
    import datasets

    if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return loaded
    if split not in loaded:
        raise ValueError(f"Split {split!r} not in {name!r}; it has {list(loaded)}.")
    return loaded[split]


def iterate_waveforms(
    dataset,
    audio_column: str,
    sampling_rate: int,
    batch_size: int = 32,
    progress: bool = False,
    description: str = "Clips",
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """`(row indices, mono float32 waveforms at sampling_rate)` in batches, in dataset order.

    Cells are read undecoded and decoded by [`~audio_input.load_audio`]; an unreadable clip raises an
    [`~audio_input.AudioInputError`] naming its row and file. With `progress`, a bar in clips (titled
    `description`) counts the clips whose batch the caller has finished with: decoding and what the caller does with
    each batch (embedding, scoring) advance it together.
    """
    import datasets
    from transformers.utils.logging import tqdm

    undecoded = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    with tqdm(total=len(dataset), desc=description, unit="clips", disable=not progress) as bar:
        for start in range(0, len(dataset), batch_size):
            cells = undecoded[start : start + batch_size][audio_column]
            indices = list(range(start, start + len(cells)))
            yield (
                indices,
                [_decode_row(cell, index, sampling_rate) for index, cell in zip(indices, cells, strict=True)],
            )
            bar.update(len(indices))


def load_waveforms(
    dataset, audio_column: str, sampling_rate: int, progress: bool = False
) -> list[np.ndarray]:
    """Every clip of `dataset` decoded, as in [`iterate_waveforms`] (`progress`: a bar in clips)."""
    batches = iterate_waveforms(
        dataset, audio_column, sampling_rate, progress=progress, description="Decoding"
    )
    return [waveform for _, batch in batches for waveform in batch]


def _decode_row(cell: dict, index: int, sampling_rate: int) -> np.ndarray:
    path = cell.get("path") if isinstance(cell, dict) else None
    name = f"The audio of example {index}" + (f" ({path})" if path else "")
    return load_audio(cell, target_rate=sampling_rate, name=name)[0]


__all__ = ["is_saved_dataset", "iterate_waveforms", "load_dataset_source", "load_waveforms"]
