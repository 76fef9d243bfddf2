"""Building, saving and loading a frame-level index of a sound collection (the package docstring says what it holds)."""

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging
from transformers.utils.logging import tqdm

from ..audio_input import AudioInput, open_audio
from ..embedding import embed_text
from ..sound_event_detection import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_WINDOW_BATCH_SIZE,
    FrameGrid,
    check_windows,
    embed_windows,
)
from ..utils.cli import install_line, require_extra

logger = logging.get_logger(__name__)
INDEX_TYPES = ("Flat", "IVF", "IVF-PQ", "HNSW")
# The choice rule of `choose_index_type`, in frames (32 frames per 10 s: 11 520 frames per hour of audio).
FLAT_MAX_FRAMES = 100_000
IVF_MAX_FRAMES = 1_000_000
# Candidate frames per requested moment when `num_frames` is not given: about 3 s of audio, a typical sound event.
# The last one's score is the activity threshold, so more frames per moment would merge neighbouring events.
FRAMES_PER_MOMENT = 10
# Approximate indexes return this many times the frames asked for, re-scored exactly against the stored embeddings:
# PQ codes rank near-ties loosely, and re-scoring 50 x k float16 rows costs about a millisecond.
RERANK_FACTOR = 50
FORMAT_VERSION = 1
SETTINGS_FILE = "search_index.json"  # written last: its presence marks a finished index
BUILD_FILE = "build.json"  # the settings of a build in progress, compared on resume
FRAME_COLUMN = "embedding"
CLIP_COLUMN = "clip_embedding"
_IGNORED_CONFIG_KEYS = {
    "transformers_version",
    "_name_or_path",
    "dtype",
    "torch_dtype",
    "architectures",
    "auto_map",
}
_PROBE_TEXT = "a probe of the model's weights"
# Cosine between the probe embeddings of the indexing model and the searching model: below it, they differ.
_PROBE_MIN_COSINE = 0.99


class SearchIndexError(ValueError):
    """An index folder that cannot be used: missing or corrupt files, or made with another model or settings."""


def faiss_available() -> bool:
    """Whether `faiss` (the `[search]` extra) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_index_type(num_frames: int) -> str:
    """The index type for a collection of `num_frames` frames (11 520 per hour of audio).

    `Flat` (exact) up to 100 000 frames, `IVF` up to 1 000 000, `IVF-PQ` beyond; see the module docstring.
    """
    if num_frames <= FLAT_MAX_FRAMES:
        return "Flat"
    return "IVF" if num_frames <= IVF_MAX_FRAMES else "IVF-PQ"


def _num_lists(num_vectors: int) -> int:
    """IVF lists: about sqrt(n), with at least 39 training vectors per list (FAISS's k-means minimum)."""
    return max(1, min(int(math.sqrt(num_vectors)), num_vectors // 39))


def _pq_size(dim: int) -> int:
    """PQ sub-quantizers: 4 dimensions each, at most 64 (64 bytes per frame), dividing `dim`."""
    target = max(1, min(64, dim // 4))
    return max(m for m in range(1, target + 1) if dim % m == 0)


def faiss_factory(index_type: str, num_vectors: int, dim: int) -> tuple[str, dict[str, int]]:
    """The FAISS factory string and search parameters of `index_type` for `num_vectors` vectors of `dim`.

    Returns:
        `(factory, parameters)`: e.g. `("IVF1073,PQ64", {"nprobe": 67})`; parameters are set with
        `faiss.ParameterSpace` when the index is loaded.

    Raises:
        `ValueError`: an unknown type, or IVF-PQ on fewer than 256 vectors (its codebooks need 256 to train).
    """
    if index_type == "Flat":
        return "Flat", {}
    if index_type == "HNSW":
        return "HNSW32", {"efSearch": 128}
    lists = _num_lists(num_vectors)
    probes = min(lists, max(16, lists // 8))
    if index_type == "IVF":
        return f"IVF{lists},Flat", {"nprobe": probes}
    if index_type == "IVF-PQ":
        if num_vectors < 256:
            raise ValueError(f"IVF-PQ needs at least 256 vectors to train, got {num_vectors}; use 'Flat'.")
        return f"IVF{lists},PQ{_pq_size(dim)}", {"nprobe": probes}
    raise ValueError(
        f"Unknown `index_type` {index_type!r}; choose one of {INDEX_TYPES} (or None: automatic)."
    )


def cosines(embeddings: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products `(N,)` float32 of stored float16 embeddings `(N, D)` with a normalised query `(D,)`: the one
    scoring expression of the search path (re-scoring, curves, clip scores), so that every backend agrees.

    einsum, not a BLAS call: waking a BLAS thread pool costs more than these small products on a busy CPU.
    """
    return np.einsum("nd,d->n", embeddings, np.asarray(query, dtype=np.float32), dtype=np.float32)


class EmbeddingRows:
    """Zero-copy `(rows, D)` float16 views of a fixed-size-list column of a `datasets.Dataset` (memory-mapped from
    disk), with exact float32 scoring: the re-scoring of approximate candidates and the torch fallback."""

    def __init__(self, dataset, column: str):
        dataset = dataset.flatten_indices() if dataset._indices is not None else dataset
        self.dim = dataset.features[column].length
        self.chunks = [
            chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, self.dim)
            for chunk in dataset.data.table.column(column).chunks
            if len(chunk)
        ]
        self.starts = np.cumsum([0] + [len(chunk) for chunk in self.chunks])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings `(len(rows), D)` float16 of `rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        chunk = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), dtype=np.float16)
        for index in np.unique(chunk):
            where = chunk == index
            out[where] = self.chunks[index][rows[where] - self.starts[index]]
        return out

    def range(self, start: int, stop: int) -> np.ndarray:
        """The embeddings `(stop - start, D)` of the contiguous rows `[start, stop)` (a view when in one chunk)."""
        chunk = int(np.searchsorted(self.starts, start, side="right")) - 1
        if stop <= self.starts[chunk + 1]:
            return self.chunks[chunk][start - self.starts[chunk] : stop - self.starts[chunk]]
        return self.take(np.arange(start, stop))

    def top(self, query: np.ndarray, k: int, block: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`k` inner products with `query` `(D,)`: `(scores, rows)`, best first (float32 scores)."""
        query = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
        best_scores, best_rows = torch.empty(0), torch.empty(0, dtype=torch.long)
        for chunk, start in zip(self.chunks, self.starts, strict=False):
            for first in range(0, len(chunk), block):
                scores = torch.from_numpy(chunk[first : first + block].astype(np.float32)) @ query
                scores, rows = torch.topk(scores, min(k, len(scores)))
                best_scores = torch.cat([best_scores, scores])
                best_rows = torch.cat([best_rows, rows + int(start) + first])
                keep = torch.topk(best_scores, min(k, len(best_scores))).indices
                best_scores, best_rows = best_scores[keep], best_rows[keep]
        return best_scores.numpy(), best_rows.numpy()


@dataclass
class SoundIndex:
    r"""
    A searchable collection: the frame and recording tables, their FAISS indexes, and the model that made them.

    Args:
        path (`Path`): the index folder.
        frames (`datasets.Dataset`): per frame `recording`, `onset`, `offset`, `embedding` (`(D,)` float16).
        recordings (`datasets.Dataset`): per recording `recording_id`, `row`, `duration`, `first_frame`,
            `num_frames`, `clip_embedding` (`(D,)` float16).
        settings (`dict`): what [`build_index`] recorded: the model's fingerprint, the windows, the index type and
            its FAISS search parameters.
        model, processor: the model and processor that embed queries (those of the index, checked by
            [`load_index`]).
        use_faiss (`bool`): search through the FAISS indexes; `False`: exact torch scans.
    """

    path: Path
    frames: Any
    recordings: Any
    settings: dict
    model: Any = None
    processor: Any = None
    use_faiss: bool = True
    _rows: dict = field(default_factory=dict, repr=False)
    _columns: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def hours(self) -> float:
        """Hours of audio indexed."""
        return self.settings["total_seconds"] / 3600.0

    def column(self, which: str, name: str) -> np.ndarray | list:
        """A scalar column of `"frames"` or `"recordings"` as a numpy array (a list for strings), read once: the
        search path indexes these instead of materialising rows."""
        key = (which, name)
        if key not in self._columns:
            table = self.frames if which == "frames" else self.recordings
            values = table.data.column(name)
            self._columns[key] = values.to_pylist() if name == "recording_id" else values.to_numpy()
        return self._columns[key]

    def rows(self, which: str) -> EmbeddingRows:
        """The embeddings of `"frames"` or `"recordings"`, as [`EmbeddingRows`] (built once)."""
        if which not in self._rows:
            table, column = (
                (self.frames, FRAME_COLUMN) if which == "frames" else (self.recordings, CLIP_COLUMN)
            )
            self._rows[which] = EmbeddingRows(table, column)
        return self._rows[which]

    def nearest(self, which: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` frames (`which="frames"`) or recordings nearest to the normalised `query` `(D,)`.

        FAISS Flat and the torch scan (without FAISS) are exact; an approximate index returns RERANK_FACTOR times
        `k` candidates. Whichever found them, the candidates are scored by one expression (their stored float16
        embeddings against the query, in float32), so that every backend reports the same scores for the same rows.

        Returns:
            `(scores, rows)`: float32 cosines and int64 rows, best first.
        """
        rows = self.rows(which)
        k = min(k, len(rows))
        if not self.use_faiss:
            found = rows.top(query, k)[1]
        else:
            table, column = (
                (self.frames, FRAME_COLUMN) if which == "frames" else (self.recordings, CLIP_COLUMN)
            )
            exact = self.settings["index_type"] == "Flat" or which == "recordings"
            fetched = k if exact else min(len(rows), RERANK_FACTOR * k)
            found = _search_one(table, column, np.asarray(query, dtype=np.float32), fetched)
            found = found[found >= 0]  # FAISS pads with -1 when fewer are reachable
        scores = cosines(rows.take(found), query)
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], found[order]


def _search_one(table, column: str, query: np.ndarray, k: int) -> np.ndarray:
    """`Dataset.search` of one query on one OpenMP thread: a single query gains nothing from FAISS's thread pool,
    whose threads, woken for every query, then spin beside torch's own pool (on 2 cores, the next text embedding
    took several times longer)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return table.search(column, query, k=k)[1]
    finally:
        faiss.omp_set_num_threads(threads)


# -- indexing -----------------------------------------------------------------------------------------------------


def model_fingerprint(model, processor) -> dict:
    """What identifies the model of an index: type, projection size, a hash of its configuration, and the
    embedding of a fixed probe text (which differs when the weights or the tokenizer differ)."""
    config = {key: value for key, value in model.config.to_dict().items() if key not in _IGNORED_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    probe = embed_text(model, processor, [_PROBE_TEXT], return_word_embeds=False).text_embeds[0]
    name = getattr(model, "name_or_path", "") or ""
    return {
        # A local folder is recorded absolute: the index is queried from other working directories.
        "name_or_path": os.path.abspath(name) if name and os.path.isdir(name) else name,
        "model_type": getattr(model.config, "model_type", ""),
        "projection_dim": int(probe.shape[-1]),
        "config_hash": digest,
        "probe": [round(float(value), 6) for value in probe.cpu()],
    }


def check_same_model(indexed: dict, current: dict, where: str) -> None:
    """Raise a [`SearchIndexError`] when `current` (a [`model_fingerprint`]) is not the model of `indexed`."""
    if indexed["projection_dim"] != current["projection_dim"]:
        raise SearchIndexError(
            f"{where} was built with a model of projection size {indexed['projection_dim']}, but this model's is "
            f"{current['projection_dim']}: search it with its own model ({indexed['name_or_path']!r})."
        )
    if indexed["config_hash"] != current["config_hash"]:
        raise SearchIndexError(
            f"{where} was built with another model configuration ({indexed['name_or_path']!r}); search it with "
            "that model, or index the collection again with this one."
        )
    cosine = float(np.dot(indexed["probe"], current["probe"]))
    if cosine < _PROBE_MIN_COSINE:
        raise SearchIndexError(
            f"{where} was built with other weights (or another tokenizer) than this model's: the embeddings of a "
            f"probe text agree to a cosine of {cosine:.3f} only. Search it with {indexed['name_or_path']!r}."
        )


def _recordings_source(source, split: str, config_name: str | None, audio_column: str):
    """The source as a `datasets.Dataset` whose audio column is undecoded (`{"bytes", "path"}` cells)."""
    import datasets

    from ..data.sources import load_dataset_source

    dataset = load_dataset_source(source, split, config_name)
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            "Indexing needs a map-style `datasets.Dataset` (streaming sources cannot be resumed)."
        )
    if audio_column not in dataset.column_names:
        raise ValueError(f"No audio column {audio_column!r}; the dataset has {dataset.column_names}.")
    if isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    return dataset


def _describe_source(source) -> str:
    """A stable description of the source, compared when a build resumes."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    fingerprint = getattr(source, "_fingerprint", None)
    return f"{type(source).__name__}:{fingerprint}" if fingerprint else type(source).__name__


def _recording_id(dataset, row: int, cell: Any, id_column: str | None) -> str:
    if id_column is not None:
        return str(dataset[row][id_column])
    path = cell.get("path") if isinstance(cell, dict) else cell if isinstance(cell, str) else None
    return os.path.basename(path) if path else f"row {row}"


def embed_recording(
    model,
    feature_extractor,
    audio: AudioInput,
    *,
    sampling_rate: int | None = None,
    name: str | None = None,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
) -> dict:
    """The frames and the clip embedding of one recording of any length, on the windowed path.

    Returns:
        `dict` with `frames` (`torch.FloatTensor` of shape `(F, D)`, normalised mean of the window frames covering
        each grid frame), `onsets` and `offsets` (`torch.DoubleTensor` of shape `(F,)`, seconds), `clip`
        (`torch.FloatTensor` of shape `(D,)`, normalised mean of the windows' clip embeddings) and `duration`.
    """
    window_seconds, hop_seconds = check_windows(window_seconds, hop_seconds, feature_extractor.max_length_s)
    with open_audio(audio, sampling_rate, name, default_rate=feature_extractor.sampling_rate) as source:
        grid, clips = None, []
        for onsets, embeddings in embed_windows(
            model, source, feature_extractor, window_seconds, hop_seconds, batch_size
        ):
            frames = embeddings.frame_embeds
            if frames is None:
                raise TypeError(
                    f"{type(model).__name__} has no frame embeddings: search needs MGA-CLAP frames."
                )
            if grid is None:
                # The grid averages embeddings instead of scores: its columns are the D dimensions.
                grid = FrameGrid(source.duration, window_seconds / frames.shape[1], frames.shape[-1])
            grid.add(onsets, frames, embeddings.frame_mask)
            clips.append(embeddings.clip_embeds)
        stitched = grid.result(num_windows=0)
    keep = stitched.frame_mask.bool()
    return {
        "frames": F.normalize(stitched.frame_similarity[keep], dim=-1),
        "onsets": stitched.frame_boundaries[:-1][keep],
        "offsets": stitched.frame_boundaries[1:][keep],
        "clip": F.normalize(torch.cat(clips).mean(dim=0), dim=0),
        "duration": stitched.duration,
    }


def _fixed_size_column(vectors: np.ndarray):
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float16)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def frame_table(recording: np.ndarray, onsets: np.ndarray, offsets: np.ndarray, embeddings: np.ndarray):
    """The `frames` table (see [`SoundIndex`]) from arrays: `(F,)` ints, `(F,)` seconds, `(F, D)` embeddings."""
    import datasets
    import pyarrow as pa

    table = pa.table(
        {
            "recording": pa.array(np.asarray(recording, dtype=np.int64)),
            "onset": pa.array(np.asarray(onsets, dtype=np.float64)),
            "offset": pa.array(np.asarray(offsets, dtype=np.float64)),
            FRAME_COLUMN: _fixed_size_column(embeddings),
        }
    )
    return datasets.Dataset(table)


def recording_table(
    recording_ids: Sequence[str],
    rows: np.ndarray,
    durations: np.ndarray,
    num_frames: np.ndarray,
    clip_embeddings: np.ndarray,
):
    """The `recordings` table (see [`SoundIndex`]); `first_frame` is the running sum of `num_frames`."""
    import datasets
    import pyarrow as pa

    num_frames = np.asarray(num_frames, dtype=np.int64)
    table = pa.table(
        {
            "recording_id": pa.array(list(recording_ids), type=pa.string()),
            "row": pa.array(np.asarray(rows, dtype=np.int64)),
            "duration": pa.array(np.asarray(durations, dtype=np.float64)),
            "first_frame": pa.array(np.concatenate([[0], np.cumsum(num_frames)[:-1]]).astype(np.int64)),
            "num_frames": pa.array(num_frames),
            CLIP_COLUMN: _fixed_size_column(clip_embeddings),
        }
    )
    return datasets.Dataset(table)


def _shard_name(start: int, stop: int) -> str:
    return f"{start:09d}-{stop:09d}"


def _finished_shards(folder: Path) -> list[tuple[int, int, Path]]:
    """`(start, stop, path)` of the shards written completely (a shard folder appears by an atomic rename)."""
    shards = []
    for path in sorted(folder.glob("*-*")) if folder.is_dir() else []:
        if path.name.endswith(".tmp"):
            continue
        start, stop = (int(part) for part in path.name.split("-"))
        shards.append((start, stop, path))
    for (_, stop, _), (start, _, path) in zip(shards, shards[1:], strict=False):
        if start != stop:
            raise SearchIndexError(
                f"{path} does not follow the shard before it: the build folder was altered."
            )
    return shards


def _write_shard(folder: Path, start: int, stop: int, embedded: list[dict], ids: list[str]) -> None:
    """Save the recordings `[start, stop)` as one shard, appearing whole or not at all (an atomic rename)."""
    frames = frame_table(
        np.concatenate([np.full(len(item["frames"]), start + i) for i, item in enumerate(embedded)]),
        torch.cat([item["onsets"] for item in embedded]).numpy(),
        torch.cat([item["offsets"] for item in embedded]).numpy(),
        torch.cat([item["frames"] for item in embedded]).numpy(),
    )
    recordings = recording_table(
        ids,
        np.arange(start, stop),
        np.array([item["duration"] for item in embedded]),
        np.array([len(item["frames"]) for item in embedded]),
        torch.stack([item["clip"] for item in embedded]).numpy(),
    )
    temporary = folder / (_shard_name(start, stop) + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)  # what an interrupted write left
    frames.save_to_disk(temporary / "frames")
    recordings.save_to_disk(temporary / "recordings")
    os.replace(temporary, folder / _shard_name(start, stop))


def _start_or_resume(output_dir: Path, settings: dict) -> None:
    """Record the build's settings, or check that a previous build of this folder had the same."""
    output_dir.mkdir(parents=True, exist_ok=True)
    build_file = output_dir / BUILD_FILE
    if not build_file.exists():
        build_file.write_text(json.dumps(settings, indent=2))
        return
    _check_settings(json.loads(build_file.read_text()), settings, output_dir)


def _check_settings(previous: dict, settings: dict, output_dir: Path) -> None:
    """A [`SearchIndexError`] unless `previous` (a build's or a finished index's settings) has `settings`."""
    check_same_model(previous["model"], settings["model"], f"The index in {output_dir}")
    differing = [key for key in settings if key != "model" and previous.get(key) != settings[key]]
    if differing:
        raise SearchIndexError(
            f"{output_dir} holds a build with other settings ({', '.join(differing)}: "
            f"{[previous.get(key) for key in differing]} there, {[settings[key] for key in differing]} now). "
            "Use another --output_dir, or remove that folder to start again."
        )


def build_index(
    model,
    processor,
    source,
    output_dir: str | os.PathLike,
    *,
    split: str = "train",
    config_name: str | None = None,
    audio_column: str = "audio",
    id_column: str | None = None,
    index_type: str | None = None,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    shard_size: int = 64,
    progress: bool = False,
) -> SoundIndex:
    """Index every recording of a collection into `output_dir`, resumably.

    Args:
        model: an [`MGAClapModel`] (eval mode).
        processor: its processor (feature extractor and tokenizer).
        source: a `datasets.Dataset` / `DatasetDict`, a Hub id, a `save_to_disk` folder, an audiofolder or a folder
            of audio files (anything [`~data.sources.load_dataset_source`] reads).
        output_dir: the index folder. Calling again on a folder whose build stopped continues it; on a finished
            index with the same settings, loads it.
        split, config_name: the split and configuration of a Hub dataset or a folder with splits.
        audio_column (`str`): the audio column (cells, paths or bytes; read window by window).
        id_column (`str`, *optional*): the column naming each recording; default: the audio file's name.
        index_type (`str`, *optional*): `"Flat"`, `"IVF"`, `"IVF-PQ"` or `"HNSW"`; default: [`choose_index_type`]
            of the number of frames.
        window_seconds, hop_seconds, batch_size: the windows (see
            [`~sound_event_detection.compute_long_audio_frame_similarity`]).
        shard_size (`int`): recordings per shard: at most this many are embedded again after an interruption.
        progress (`bool`): a progress bar in recordings, with the hours of audio indexed.

    Returns:
        [`SoundIndex`] with `model` and `processor` attached.

    Raises:
        `ValueError`: an unknown index type or a bad option, before any audio is read; [`SearchIndexError`]: an
            `output_dir` holding a build with another model or settings.
    """
    if index_type is not None and index_type not in INDEX_TYPES:
        raise ValueError(
            f"Unknown `index_type` {index_type!r}; choose one of {INDEX_TYPES} (or None: automatic)."
        )
    if index_type not in (None, "Flat"):
        require_extra("search", ("faiss",), f"An {index_type} index")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"`shard_size` must be an integer >= 1, got {shard_size!r}.")
    extractor = processor.feature_extractor
    window_seconds, hop_seconds = check_windows(window_seconds, hop_seconds, extractor.max_length_s)
    dataset = _recordings_source(source, split, config_name, audio_column)
    if len(dataset) == 0:
        raise ValueError("The source has no recordings.")
    output_dir = Path(output_dir)
    settings = {
        "format_version": FORMAT_VERSION,
        "model": model_fingerprint(model, processor),
        "source": _describe_source(source),
        "split": split,
        "num_recordings": len(dataset),
        "audio_column": audio_column,
        "id_column": id_column,
        "window_seconds": window_seconds,
        "hop_seconds": hop_seconds,
        "sampling_rate": extractor.sampling_rate,
        "requested_index_type": index_type,
    }
    if (output_dir / SETTINGS_FILE).exists():
        index = load_index(output_dir, model, processor)
        _check_settings(index.settings, settings, output_dir)  # the same collection and settings, or an error
        return index
    _start_or_resume(output_dir, settings)
    shard_folder = output_dir / "shards"
    shard_folder.mkdir(exist_ok=True)
    shards = _finished_shards(shard_folder)
    start = shards[-1][1] if shards else 0
    seconds = sum(_shard_seconds(path) for _, _, path in shards)
    with tqdm(
        total=len(dataset), initial=start, unit="recordings", desc="Indexing", disable=not progress
    ) as bar:
        bar.set_postfix(hours=f"{seconds / 3600:.3f}")
        for first in range(start, len(dataset), shard_size):
            stop = min(first + shard_size, len(dataset))
            embedded, ids = [], []
            for row in range(first, stop):
                cell = dataset[row][audio_column]
                ids.append(_recording_id(dataset, row, cell, id_column))
                embedded.append(
                    embed_recording(
                        model,
                        extractor,
                        cell,
                        name=f"Recording {row} ({ids[-1]})",
                        window_seconds=window_seconds,
                        hop_seconds=hop_seconds,
                        batch_size=batch_size,
                    )
                )
                seconds += embedded[-1]["duration"]
                bar.update(1)
                bar.set_postfix(hours=f"{seconds / 3600:.3f}")
            _write_shard(shard_folder, first, stop, embedded, ids)
    return _finish(output_dir, settings, index_type, model, processor, progress)


def _column(table, name: str) -> np.ndarray:
    """A scalar column of a `datasets.Dataset` without indices mapping, as a numpy array."""
    return table.data.column(name).to_numpy()


def _shard_seconds(path: Path) -> float:
    import datasets

    return float(_column(datasets.load_from_disk(path / "recordings"), "duration").sum())


def _finish(
    output_dir: Path, settings: dict, index_type: str | None, model, processor, progress: bool
) -> SoundIndex:
    """Join the shards into the two tables, build and save the FAISS indexes, then write the settings file."""
    import datasets

    shards = _finished_shards(output_dir / "shards")
    if not shards or shards[-1][1] != settings["num_recordings"]:
        raise SearchIndexError(
            f"The shards of {output_dir} do not cover the {settings['num_recordings']} recordings."
        )
    frames = datasets.concatenate_datasets([datasets.load_from_disk(path / "frames") for *_, path in shards])
    recordings = datasets.concatenate_datasets(
        [datasets.load_from_disk(path / "recordings") for *_, path in shards]
    )
    counts = _column(recordings, "num_frames").astype(np.int64)
    recordings = recordings.remove_columns("first_frame").add_column(
        "first_frame", np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    )
    index = save_index(output_dir, frames, recordings, settings, index_type, progress=progress)
    shutil.rmtree(output_dir / "shards")
    (output_dir / BUILD_FILE).unlink()
    index.model, index.processor = model, processor
    return index


def save_index(
    output_dir: str | os.PathLike,
    frames,
    recordings,
    settings: dict,
    index_type: str | None = None,
    progress: bool = False,
) -> SoundIndex:
    """Write the two tables and their FAISS indexes (through `add_faiss_index` / `save_faiss_index`) to
    `output_dir`, then the settings file that marks the index finished, and load it back.

    `frames` and `recordings` are tables as [`frame_table`] and [`recording_table`] make them; `settings` holds at
    least `"model"` (a [`model_fingerprint`]). The benchmark uses this with synthesised frames.
    """
    output_dir = Path(output_dir)
    index_type = index_type or choose_index_type(len(frames))
    frames.save_to_disk(output_dir / "frames")
    recordings.save_to_disk(output_dir / "recordings")
    frames = _load_table(output_dir / "frames")
    recordings = _load_table(output_dir / "recordings")
    parameters, use_faiss = {}, faiss_available()
    if use_faiss:
        parameters = _add_faiss_index(frames, FRAME_COLUMN, index_type, progress)
        frames.save_faiss_index(FRAME_COLUMN, str(output_dir / "frames.faiss"))
        _add_faiss_index(recordings, CLIP_COLUMN, "Flat", progress)
        recordings.save_faiss_index(CLIP_COLUMN, str(output_dir / "clips.faiss"))
    else:
        logger.warning(_no_faiss_message(len(frames)))
        index_type = "exact (no FAISS)"
    durations = _column(recordings, "duration")
    settings = {
        **settings,
        "index_type": index_type,
        "faiss_parameters": parameters,
        "num_frames": len(frames),
        "total_seconds": float(durations.sum()),
    }
    (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    return SoundIndex(output_dir, frames, recordings, settings, use_faiss=use_faiss)


def _no_faiss_message(num_frames: int) -> str:
    return (
        f"FAISS is not installed: searching the {num_frames} frames with an exact torch scan instead (fine for "
        f"small collections, slow past a few hours of audio). For FAISS indexes: {install_line('search')}"
    )


def _add_faiss_index(table, column: str, index_type: str, progress: bool) -> dict[str, int]:
    """Build the FAISS index of `column` (inner product on normalised vectors: cosine) through
    `Dataset.add_faiss_index`; returns the search parameters to set at load time."""
    import faiss

    rows = EmbeddingRows(table, column)
    factory, parameters = faiss_factory(index_type, len(rows), rows.dim)
    index = faiss.index_factory(rows.dim, factory, faiss.METRIC_INNER_PRODUCT)
    if index_type == "HNSW":
        index.hnsw.efConstruction = 80
    if not index.is_trained:
        # A random sample, not the first rows: those come from the first recordings only.
        sample = min(len(rows), max(256 * 39, 50 * _num_lists(len(rows))))
        chosen = np.sort(np.random.default_rng(0).choice(len(rows), sample, replace=False))
        index.train(rows.take(chosen).astype(np.float32))
    table.add_faiss_index(column, custom_index=index, batch_size=65_536, faiss_verbose=progress)
    _set_parameters(table, column, parameters)
    return parameters


def _set_parameters(table, column: str, parameters: dict[str, int]) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in parameters.items():
        space.set_index_parameter(table.get_index(column).faiss_index, name, value)


def _load_table(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise SearchIndexError(
            f"{path} is missing or unreadable ({error}); build the index again."
        ) from error


def _load_faiss(table, column: str, file: Path, parameters: dict[str, int]) -> None:
    try:
        table.load_faiss_index(column, str(file))
    except (RuntimeError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SearchIndexError(
            f"{file} is not a readable FAISS index of this collection ({reason}); build the index again."
        ) from error
    _set_parameters(table, column, parameters)


def load_index(
    path: str | os.PathLike, model=None, processor=None, *, use_faiss: bool | None = None
) -> SoundIndex:
    """Open a finished index folder, ready for [`search`].

    Args:
        path: the folder [`build_index`] wrote.
        model, processor (*optional*): the model that embeds queries. Checked against the index's fingerprint;
            default: loaded from the `name_or_path` the index recorded (`AutoModel`, remote code).
        use_faiss (`bool`, *optional*): `False` for exact torch scans; default: FAISS when installed (otherwise a
            warning, and torch).

    Raises:
        [`SearchIndexError`]: a folder that is not a finished index, corrupt files, or an index of another model.
    """
    path = Path(path)
    settings_file = path / SETTINGS_FILE
    if not settings_file.is_file():
        hint = (
            " (an unfinished build: run the indexing again to continue it)"
            if (path / BUILD_FILE).exists()
            else ""
        )
        raise SearchIndexError(f"{path} is not a finished search index: no {SETTINGS_FILE}{hint}.")
    try:
        settings = json.loads(settings_file.read_text())
    except json.JSONDecodeError as error:
        raise SearchIndexError(f"{settings_file} is corrupt ({error}); build the index again.") from error
    if settings.get("format_version") != FORMAT_VERSION:
        raise SearchIndexError(
            f"{path} has index format {settings.get('format_version')}, not {FORMAT_VERSION}."
        )
    if model is None:
        from transformers import AutoModel, AutoProcessor

        name = settings["model"]["name_or_path"]
        model = AutoModel.from_pretrained(name, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(name, trust_remote_code=True)
    if processor is None:
        raise ValueError("Pass the model's `processor` with the model.")
    check_same_model(settings["model"], model_fingerprint(model, processor), f"The index {path}")
    frames, recordings = _load_table(path / "frames"), _load_table(path / "recordings")
    has_faiss_files = (path / "frames.faiss").exists()
    if use_faiss is None:
        use_faiss = has_faiss_files and faiss_available()
        if not use_faiss:
            logger.warning(_no_faiss_message(len(frames)))
    if use_faiss:
        require_extra("search", ("faiss",), "Searching through FAISS")
        if not has_faiss_files:
            raise SearchIndexError(f"{path} was built without FAISS: load it with `use_faiss=False`.")
        _load_faiss(frames, FRAME_COLUMN, path / "frames.faiss", settings["faiss_parameters"])
        _load_faiss(recordings, CLIP_COLUMN, path / "clips.faiss", {})
    return SoundIndex(path, frames, recordings, settings, model, processor, use_faiss)


def synthetic_collection(
    num_clips: int = 48,
    clips_per_recording: int = 6,
    single_clips: int = 0,
    seed: int = 1234,
    progress: bool = False,
):
    """A collection with strong labels for offline demos and benchmarks: held-out synthetic soundscapes (the
    generator's "test" stream, never trained on), the first `single_clips` kept as 10 s recordings and the others
    joined end to end, `clips_per_recording` at a time, into long recordings.

    Returns:
        `datasets.Dataset` with `audio` (16-bit WAV bytes, `datasets.Audio` at 32 kHz), `recording_id`
        (`synthetic_0000.wav`, ...), `events` (`event_label`, `onset`, `offset` in seconds from the start of the
        recording) and `labels`.
    """
    import datasets

    from ..audio_input import load_audio
    from ..data.soundscapes import build_soundscape_dataset, dataset_from_columns, encode_wav

    clips = build_soundscape_dataset(num_clips, seed, "test", progress=progress)
    rate = clips.features["audio"].sampling_rate
    raw = clips.cast_column("audio", datasets.Audio(decode=False))
    groups = [[i] for i in range(min(single_clips, num_clips))]
    groups += [
        list(range(i, min(i + clips_per_recording, num_clips)))
        for i in range(len(groups), num_clips, clips_per_recording)
    ]
    columns = {"audio": [], "recording_id": [], "events": [], "labels": []}
    for number, group in enumerate(groups):
        pieces, events, offset = [], [], 0.0
        for row in group:
            waveform = load_audio(raw[row]["audio"], target_rate=rate)[0]
            events += [
                {**event, "onset": event["onset"] + offset, "offset": event["offset"] + offset}
                for event in raw[row]["events"]
            ]
            pieces.append(waveform)
            offset += len(waveform) / rate
        name = f"synthetic_{number:04d}.wav"
        columns["audio"].append({"bytes": encode_wav(np.concatenate(pieces), rate, "PCM_16"), "path": name})
        columns["recording_id"].append(name)
        columns["events"].append(events)
        columns["labels"].append(sorted({event["event_label"] for event in events}))
    return dataset_from_columns(columns).cast_column("audio", datasets.Audio(sampling_rate=rate))


# -- searching ----------------------------------------------------------------------------------------------------
