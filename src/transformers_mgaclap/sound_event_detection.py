"""Zero-shot sound event detection on recordings of any length (minutes to hours) with MGA-CLAP.

The model sees 10 s windows (32 frames of 10/32 s each). A long recording is cut into overlapping windows
(`hop_seconds`, 5 s by default), embedded `batch_size` windows at a time (only one batch of features exists at any
moment, so memory does not grow with the recording), and each window's frame-text cosines are added onto one
absolute time grid of frames of `window_seconds / 32` seconds, weighted by how many seconds of each grid frame the
window frame covers. The averaged curves then go through [`post_process_sound_event_detection`].

The last window is zero-padded past the end of the recording and its padded frames are masked: they never
contribute to the curves, so no event can start in padding. The text queries are embedded once.

A recording given as a file path is read window by window (soundfile: WAV, FLAC, OGG, ...), so an hour of audio never
sits in memory; peak memory is then independent of the recording's length. An array is sliced without a copy.

This module is copied next to the weights as remote code: it imports only torch, numpy, transformers and flat
sibling modules.
"""

import contextlib
import copy
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .processing_mgaclap import DEFAULT_THRESHOLD, MAX_TEXT_LENGTH, post_process_sound_event_detection

try:  # optional progress bar
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover - tqdm is a transformers dependency
    tqdm = None


@dataclass
class LongAudioFrameSimilarity:
    r"""
    Frame-text similarity of a whole recording on an absolute time grid.

    Args:
        frame_similarity (`torch.FloatTensor` of shape `(frames, queries)`):
            Overlap-weighted mean over the windows of the raw cosines (normalised frame embedding against normalised
            global text embedding, as [`MGAClapModel.get_frame_text_similarity`]).
        frame_boundaries (`torch.DoubleTensor` of shape `(frames + 1,)`):
            Grid frame `k` spans `[frame_boundaries[k], frame_boundaries[k + 1])` seconds from the start of the
            recording; the last boundary is the recording's duration.
        frame_mask (`torch.LongTensor` of shape `(frames,)`): 1 where at least one unpadded window frame contributed.
        num_windows (`int`): windows embedded.
        duration (`float`): length of the recording in seconds.
    """

    frame_similarity: torch.Tensor
    frame_boundaries: torch.Tensor
    frame_mask: torch.Tensor
    num_windows: int
    duration: float


def window_starts(num_samples: int, window_samples: int, hop_samples: int) -> list[int]:
    """Start samples of the windows: every `hop_samples` until one window reaches the end (at least one window)."""
    if window_samples <= 0 or hop_samples <= 0:
        raise ValueError("Window and hop must be positive.")
    if hop_samples > window_samples:
        raise ValueError(
            "`hop_seconds` larger than `window_seconds` would leave parts of the recording unseen."
        )
    count = 1 + max(0, math.ceil((num_samples - window_samples) / hop_samples))
    return [index * hop_samples for index in range(count)]


def _as_mono_1d(waveform) -> torch.Tensor:
    """A 1-D float tensor view of a numpy array or tensor (no copy of the whole recording when already float)."""
    if isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TypeError(f"Expected floating-point audio, got dtype {waveform.dtype}.")
        with (
            warnings.catch_warnings()
        ):  # read-only arrays (ffmpeg output, memory maps) are only ever read here
            warnings.simplefilter("ignore", UserWarning)
            waveform = torch.from_numpy(waveform)
    elif not isinstance(waveform, torch.Tensor):
        raise TypeError(f"Expected a 1-D numpy array or torch tensor, got {type(waveform).__name__}.")
    if waveform.dim() != 1:
        raise ValueError(f"Expected mono audio of shape (samples,), got shape {tuple(waveform.shape)}.")
    if not waveform.is_floating_point():
        raise TypeError(f"Expected floating-point audio, got dtype {waveform.dtype}.")
    if waveform.numel() == 0:
        raise ValueError("The recording is empty.")
    return waveform


class _ArraySource:
    """Windows sliced out of an in-memory recording."""

    def __init__(self, waveform, sampling_rate: int):
        self.waveform = _as_mono_1d(waveform)
        self.num_samples = self.waveform.shape[0]
        self.sampling_rate = sampling_rate

    def read(self, start: int, length: int) -> torch.Tensor:
        return self.waveform[start : start + length].float()


class _FileSource:
    """Windows read from an audio file on demand (mono mix), so the recording is never loaded whole."""

    def __init__(self, path, sampling_rate: int | None):
        import soundfile  # the `audio` extra; only needed for file input

        try:
            self.file = soundfile.SoundFile(path)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise ValueError(f"Cannot read audio file {str(path)!r}: {error}") from error
        if sampling_rate is not None and int(sampling_rate) != self.file.samplerate:
            self.file.close()
            raise ValueError(
                f"`sampling_rate={sampling_rate}` but {str(path)!r} is sampled at {self.file.samplerate} Hz; "
                "leave `sampling_rate` unset for files."
            )
        self.num_samples = self.file.frames
        self.sampling_rate = self.file.samplerate
        if self.num_samples == 0:
            self.file.close()
            raise ValueError(f"The recording {str(path)!r} is empty.")

    def read(self, start: int, length: int) -> torch.Tensor:
        self.file.seek(start)
        block = self.file.read(length, dtype="float32", always_2d=True)  # (samples, channels)
        return torch.from_numpy(block.mean(axis=1))  # the extractor rejects non-finite samples


@contextlib.contextmanager
def _open_source(waveform, sampling_rate: int | None, default_rate: int):
    """An in-memory or file-backed recording for the duration of one call (the file is closed afterwards)."""
    if not isinstance(waveform, (str, os.PathLike)):
        yield _ArraySource(waveform, default_rate if sampling_rate is None else int(sampling_rate))
        return
    source = _FileSource(waveform, sampling_rate)
    try:
        yield source
    finally:
        source.file.close()


@torch.no_grad()
def compute_long_audio_frame_similarity(
    model,
    waveform,
    text_inputs,
    feature_extractor,
    sampling_rate: int | None = None,
    window_seconds: float | None = None,
    hop_seconds: float = 5.0,
    batch_size: int = 8,
    progress: bool = True,
    text_embeds: torch.Tensor | None = None,
) -> LongAudioFrameSimilarity:
    """Frame-text cosines of a recording of any length, stitched on an absolute time axis.

    Args:
        model: an [`MGAClapModel`] (anything with its `get_audio_features` / `get_text_features`).
        waveform (`np.ndarray` or `torch.Tensor` of shape `(samples,)`, or a path): mono float audio at
            `sampling_rate`, or an audio file read window by window (bounded memory for any length).
        text_inputs (`Mapping`): tokenised queries (`input_ids`, `attention_mask`, `token_type_ids`); `None` when
            `text_embeds` is given.
        feature_extractor ([`MGAClapFeatureExtractor`]): the model's front end.
        sampling_rate (`int`, *optional*): rate of `waveform`; defaults to the extractor's (a file's own rate for a
            path). Other rates are resampled window by window by the extractor (`resample=True`).
        window_seconds (`float`, *optional*): window length; defaults to the extractor's `max_length_s` (10 s).
        hop_seconds (`float`, *optional*, defaults to 5.0): distance between window starts (<= `window_seconds`).
        batch_size (`int`, *optional*, defaults to 8): windows per model call; bounds the memory.
        progress (`bool`, *optional*, defaults to `True`): show a tqdm progress bar over the batches.
        text_embeds (`torch.Tensor` of shape `(queries, D)`, *optional*): normalised global text embeddings computed
            by the caller (e.g. once for a whole data set) instead of `text_inputs`.

    Returns:
        [`LongAudioFrameSimilarity`].
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    target_rate = feature_extractor.sampling_rate
    with _open_source(waveform, sampling_rate, target_rate) as source:
        sampling_rate = source.sampling_rate
        if window_seconds is None:
            window_seconds = float(feature_extractor.max_length_s)
        if window_seconds != feature_extractor.max_length_s:
            # A shallow copy: only `max_length_s` differs, the filters are shared.
            feature_extractor = copy.copy(feature_extractor)
            feature_extractor.max_length_s = float(window_seconds)
        window_samples = int(round(window_seconds * sampling_rate))
        hop_samples = int(round(hop_seconds * sampling_rate))
        num_samples = source.num_samples
        duration = num_samples / sampling_rate
        starts = window_starts(num_samples, window_samples, hop_samples)

        parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        device = parameter.device if parameter is not None else torch.device("cpu")
        dtype = parameter.dtype if parameter is not None else torch.float32

        if text_embeds is None:
            text_inputs = {key: value.to(device) for key, value in text_inputs.items() if value is not None}
            # (N, D), normalised, computed once for all windows
            text_embeds = model.get_text_features(**text_inputs).pooler_output
        num_queries = text_embeds.shape[0]

        # Absolute grid of frames as long as the model's frames (10 / 32 s for 10 s windows); set on the first batch.
        grid_step = None
        num_cells = 0
        sums = weights = None

        batches = [starts[index : index + batch_size] for index in range(0, len(starts), batch_size)]
        iterator = batches
        if progress and tqdm is not None:
            iterator = tqdm(batches, desc="MGA-CLAP windows", unit="batch")
        for batch_starts in iterator:
            windows = [source.read(start, window_samples) for start in batch_starts]
            features = feature_extractor(
                windows,
                sampling_rate=sampling_rate,
                resample=sampling_rate != target_rate,
                padding_mode="zero",
                truncation_mode="start",
                return_tensors="pt",
            )
            audio = model.get_audio_features(
                input_features=features["input_features"].to(device, dtype),
                input_features_mask=features["input_features_mask"].to(device),
            )
            frames = F.normalize(audio.last_hidden_state.float(), dim=-1)
            similarity = (frames @ text_embeds.float().t()).double().cpu()  # (b, T, N)
            frame_mask = audio.local_mask.cpu().bool()  # (b, T)
            num_frames = similarity.shape[1]
            if sums is None:
                grid_step = window_seconds / num_frames
                num_cells = max(1, math.ceil(duration / grid_step - 1e-9))
                sums = torch.zeros(num_cells, num_queries, dtype=torch.float64)
                weights = torch.zeros(num_cells, dtype=torch.float64)
            offsets = torch.tensor(batch_starts, dtype=torch.float64) / sampling_rate  # window start times
            local = torch.arange(num_frames + 1, dtype=torch.float64) * grid_step
            onsets = (offsets[:, None] + local[None, :-1]).flatten()  # (b * T,)
            offsets_end = (offsets[:, None] + local[None, 1:]).flatten().clamp(max=duration)
            values = similarity.reshape(-1, num_queries)
            valid = frame_mask.flatten() & (offsets_end > onsets)
            onsets, offsets_end, values = onsets[valid], offsets_end[valid], values[valid]
            # A window frame is one grid step long, so it overlaps at most two grid frames: `first` and `first + 1`.
            first = torch.floor(onsets / grid_step + 1e-9).long().clamp(max=num_cells - 1)
            for cell in (first, first + 1):
                cell_start = cell.double() * grid_step
                overlap = (
                    torch.minimum(offsets_end, cell_start + grid_step) - torch.maximum(onsets, cell_start)
                ).clamp(min=0)
                keep = (overlap > 1e-9) & (cell < num_cells)
                sums.index_add_(0, cell[keep], values[keep] * overlap[keep, None])
                weights.index_add_(0, cell[keep], overlap[keep])

        covered = weights > 0
        curve = torch.where(
            covered[:, None], sums / weights.clamp(min=1e-12)[:, None], torch.zeros_like(sums)
        )
        boundaries = (torch.arange(num_cells + 1, dtype=torch.float64) * grid_step).clamp(max=duration)
        return LongAudioFrameSimilarity(
            frame_similarity=curve.float(),
            frame_boundaries=boundaries,
            frame_mask=covered.long(),
            num_windows=len(starts),
            duration=duration,
        )


def tokenize_queries(tokenizer, labels: list[str], hypothesis_template: str = "{}") -> dict:
    """Tokenise `hypothesis_template.format(label)` for every label as the official text encoder (<= 30 tokens)."""
    if isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if not labels:
        raise ValueError("`candidate_labels` is empty: give at least one class name or phrase.")
    texts = [hypothesis_template.format(label) for label in labels]
    for label, text in zip(labels, texts, strict=True):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Query for label {label!r} is empty: nothing to embed.")
    return dict(
        tokenizer(texts, padding="longest", truncation=True, max_length=MAX_TEXT_LENGTH, return_tensors="pt")
    )


def detect_sound_events(
    model,
    waveform,
    labels: list[str],
    processor=None,
    feature_extractor=None,
    tokenizer=None,
    sampling_rate: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    hypothesis_template: str = "{}",
    window_seconds: float | None = None,
    hop_seconds: float = 5.0,
    batch_size: int = 8,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    score_reduction: str = "max",
    progress: bool = True,
) -> list[dict]:
    """Zero-shot sound event detection on a recording of any length.

    Args:
        model: an [`MGAClapModel`].
        waveform (`np.ndarray` or `torch.Tensor` of shape `(samples,)`, or a path): mono float audio, or an audio
            file read window by window.
        labels (`list[str]`): class names or free-text phrases; each becomes `hypothesis_template.format(label)`
            (default `"{}"`: the bare label, as the official SED script).
        processor ([`MGAClapProcessor`], *optional*): gives the feature extractor and the tokenizer, unless they
            are passed separately.
        sampling_rate (`int`, *optional*): rate of `waveform`; defaults to the extractor's (32 kHz).
        threshold, median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction:
            see [`post_process_sound_event_detection`].
        window_seconds, hop_seconds, batch_size, progress: see [`compute_long_audio_frame_similarity`].

    Returns:
        `list[dict]`: events `{"label", "onset", "offset", "score"}` in seconds from the start of the recording,
        sorted by onset.
    """
    feature_extractor = feature_extractor or getattr(processor, "feature_extractor", None)
    tokenizer = tokenizer or getattr(processor, "tokenizer", None)
    if feature_extractor is None or tokenizer is None:
        raise ValueError("Pass a `processor`, or both a `feature_extractor` and a `tokenizer`.")
    labels = [labels] if isinstance(labels, str) else list(labels)
    text_inputs = tokenize_queries(tokenizer, labels, hypothesis_template)
    stitched = compute_long_audio_frame_similarity(
        model,
        waveform,
        text_inputs,
        feature_extractor,
        sampling_rate=sampling_rate,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        batch_size=batch_size,
        progress=progress,
    )
    return post_process_sound_event_detection(
        stitched.frame_similarity,
        stitched.frame_boundaries,
        labels,
        threshold=threshold,
        median_filter_frames=median_filter_frames,
        min_gap_seconds=min_gap_seconds,
        min_duration_seconds=min_duration_seconds,
        frame_mask=stitched.frame_mask,
        score_reduction=score_reduction,
    )[0]


__all__ = [
    "LongAudioFrameSimilarity",
    "compute_long_audio_frame_similarity",
    "detect_sound_events",
    "tokenize_queries",
    "window_starts",
]
