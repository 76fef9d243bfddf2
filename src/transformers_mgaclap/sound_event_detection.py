"""Zero-shot sound event detection on recordings of any length (seconds to hours) with MGA-CLAP.

The model sees 10 s windows (32 frames of 10/32 s each). A recording is cut into overlapping windows (`hop_seconds`,
5 s by default) read from its [`~audio_input.AudioSource`] one batch at a time (a file is read window by window, so
memory does not grow with the recording), embedded with [`~embedding.embed_audio`], and each window's frame-text
cosines are added onto one absolute time grid of frames of `window_seconds / 32` seconds, weighted by how many
seconds of each grid frame the window frame covers ([`FrameGrid`]). The averaged curves then go through the one
event decoder, [`~processing_mgaclap.post_process_sound_event_detection`].

The last window is zero-padded past the end of the recording and its padded frames are masked: they never contribute
to the curves, so no event can start in padding. The text queries are embedded once.

This module is copied next to the weights as remote code: it imports only torch, numpy, transformers and flat sibling
modules.
"""

import copy
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers.utils.logging import tqdm

from .audio_input import AudioInput, AudioSource, open_audio
from .embedding import AudioEmbeddings, embed_audio, embed_text
from .processing_mgaclap import (
    DEFAULT_THRESHOLD,
    check_event_options,
    check_labels,
    check_number,
    format_queries,
    post_process_sound_event_detection,
)

DEFAULT_HOP_SECONDS = 5.0
DEFAULT_WINDOW_BATCH_SIZE = 8
# A window is spread over the model's 32 frames: below 1 s a frame would last under 1/32 s, far from the 10/32 s of
# training (a 10-minute recording would also need thousands of windows); the extractor's STFT fails outright on
# windows of a few milliseconds.
MIN_WINDOW_SECONDS = 1.0


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


class FrameGrid:
    """Accumulates window frames onto an absolute grid of frames as long as the model's (10/32 s for 10 s windows).

    A window frame is one grid step long, so it overlaps at most two grid frames; each gets the frame's scores
    weighted by the overlap in seconds. Padded window frames and time past the recording's end add nothing.

    Args:
        duration (`float`): the recording's length in seconds.
        grid_step (`float`): grid frame length in seconds.
        num_queries (`int`): score columns.
    """

    def __init__(self, duration: float, grid_step: float, num_queries: int):
        self.duration = duration
        self.grid_step = grid_step
        self.num_cells = max(1, math.ceil(duration / grid_step - 1e-9))
        self.sums = torch.zeros(self.num_cells, num_queries, dtype=torch.float64)
        self.weights = torch.zeros(self.num_cells, dtype=torch.float64)

    def add(self, window_onsets: torch.Tensor, similarity: torch.Tensor, frame_mask: torch.Tensor) -> None:
        """
        Args:
            window_onsets (`torch.DoubleTensor` of shape `(windows,)`): start of each window in seconds.
            similarity (`torch.Tensor` of shape `(windows, T, queries)`): the windows' frame scores.
            frame_mask (`torch.Tensor` of shape `(windows, T)`): 1 on frames of real audio.
        """
        num_frames = similarity.shape[1]
        local = torch.arange(num_frames + 1, dtype=torch.float64) * self.grid_step
        onsets = (window_onsets[:, None] + local[None, :-1]).flatten()  # (windows * T,)
        offsets = (window_onsets[:, None] + local[None, 1:]).flatten().clamp(max=self.duration)
        values = similarity.double().reshape(-1, similarity.shape[-1])
        valid = frame_mask.bool().flatten() & (offsets > onsets)
        onsets, offsets, values = onsets[valid], offsets[valid], values[valid]
        first = torch.floor(onsets / self.grid_step + 1e-9).long().clamp(max=self.num_cells - 1)
        for cell in (first, first + 1):
            cell_start = cell.double() * self.grid_step
            overlap = (
                torch.minimum(offsets, cell_start + self.grid_step) - torch.maximum(onsets, cell_start)
            ).clamp(min=0)
            keep = (overlap > 1e-9) & (cell < self.num_cells)
            self.sums.index_add_(0, cell[keep], values[keep] * overlap[keep, None])
            self.weights.index_add_(0, cell[keep], overlap[keep])

    def result(self, num_windows: int) -> LongAudioFrameSimilarity:
        """The overlap-weighted mean per grid frame (0 where nothing contributed, and masked there)."""
        covered = self.weights > 0
        curve = torch.where(covered[:, None], self.sums / self.weights.clamp(min=1e-12)[:, None], 0.0)
        boundaries = (torch.arange(self.num_cells + 1, dtype=torch.float64) * self.grid_step).clamp(
            max=self.duration
        )
        return LongAudioFrameSimilarity(curve.float(), boundaries, covered.long(), num_windows, self.duration)


def check_windows(
    window_seconds: float | None, hop_seconds: float, max_window_seconds: float
) -> tuple[float, float]:
    """The window length (`None`: `max_window_seconds`) and hop in seconds, as floats.

    Raises:
        `ValueError`: a window shorter than 1 s or longer than `max_window_seconds` (the extractor's `max_length_s`,
            what the model was trained on), or a hop not in `(0, window]` (a longer hop leaves audio unseen).
    """
    max_window_seconds = float(max_window_seconds)
    window = max_window_seconds if window_seconds is None else check_number("window_seconds", window_seconds)
    if not MIN_WINDOW_SECONDS <= window <= max_window_seconds:
        raise ValueError(
            f"`window_seconds` must be between {MIN_WINDOW_SECONDS:g} and {max_window_seconds:g} s (the feature "
            f"extractor's `max_length_s`), got {window_seconds!r}."
        )
    hop = check_number("hop_seconds", hop_seconds)
    if not 0 < hop <= window:
        raise ValueError(
            f"`hop_seconds` must be > 0 and at most the window ({window:g} s), got {hop_seconds!r}: a longer hop "
            "would leave parts of the recording unseen."
        )
    return window, hop


def check_detection_options(
    *,
    max_window_seconds: float,
    threshold: float = DEFAULT_THRESHOLD,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    score_reduction: str = "max",
) -> dict:
    """Every option of event detection, checked once for every door ([`detect_sound_events`], the pipeline, the
    endpoint handler) before any audio is read.

    Args:
        max_window_seconds (`float`): the feature extractor's `max_length_s`.
        threshold, median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction: see
            [`~processing_mgaclap.check_event_options`].
        window_seconds, hop_seconds: see [`check_windows`].

    Returns:
        `dict`: the options under their own names, normalised (floats, an int median window, the window length in
        place of `None`), ready for [`detect_sound_events`].

    Raises:
        `ValueError`: naming the first option that is wrong.
    """
    options = check_event_options(
        threshold, median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction
    )
    window, hop = check_windows(window_seconds, hop_seconds, max_window_seconds)
    return {**options, "window_seconds": window, "hop_seconds": hop}


def _window_extractor(feature_extractor, window_seconds: float):
    """The extractor with `max_length_s = window_seconds` (a shallow copy: the filters are shared)."""
    if window_seconds == feature_extractor.max_length_s:
        return feature_extractor
    extractor = copy.copy(feature_extractor)
    extractor.max_length_s = window_seconds
    return extractor


class _WindowProcessor:
    """What [`~embedding.embed_audio`] needs: a feature extractor (cut to the window length)."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor


def embed_windows(
    model,
    source: AudioSource,
    feature_extractor,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    progress: bool = False,
) -> Iterator[tuple[torch.Tensor, AudioEmbeddings]]:
    """Embed an open recording window by window: the one windowed path of event detection and search.

    Windows of `window_seconds` every `hop_seconds` ([`window_starts`]) are read `batch_size` at a time, zero-padded
    past the end (the padded frames are masked) and embedded with [`~embedding.embed_audio`].

    Yields:
        `(onsets, embeddings)` per batch: `onsets` (`torch.DoubleTensor` of shape `(windows,)`) the windows' starts
        in seconds, `embeddings` ([`~embedding.AudioEmbeddings`] on the CPU) with `frame_embeds` of shape
        `(windows, T, D)` and `frame_mask` of shape `(windows, T)`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
    window_seconds, hop_seconds = check_windows(window_seconds, hop_seconds, feature_extractor.max_length_s)
    processor = _WindowProcessor(_window_extractor(feature_extractor, window_seconds))
    rate = source.sampling_rate
    window_samples = int(round(window_seconds * rate))
    starts = window_starts(source.num_samples, window_samples, int(round(hop_seconds * rate)))
    # leave=None: the bar stays when it is the only one, and vanishes when it runs under a bar over clips.
    bar = tqdm(total=len(starts), unit="windows", desc="MGA-CLAP windows", leave=None, disable=not progress)
    for first in range(0, len(starts), batch_size):
        batch_starts = starts[first : first + batch_size]
        windows = [source.read(start, window_samples) for start in batch_starts]
        # Zero padding: the masked tail of the last window must hold no copy of real audio.
        audio = embed_audio(
            model, processor, windows, sampling_rate=rate, padding_mode="zero", truncation_mode="start"
        )
        cpu = AudioEmbeddings(audio.clip_embeds.cpu(), audio.frame_embeds.cpu(), audio.frame_mask.cpu())
        yield torch.tensor(batch_starts, dtype=torch.float64) / rate, cpu
        bar.update(len(batch_starts))
    bar.close()


def frame_similarity_of_source(
    model,
    source: AudioSource,
    text_embeds: torch.Tensor,
    feature_extractor,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    progress: bool = False,
) -> LongAudioFrameSimilarity:
    """Frame-text cosines of an open recording against normalised text embeddings `(queries, D)`.

    See [`compute_long_audio_frame_similarity`] for the arguments.
    """
    text_embeds = text_embeds.float().cpu()
    window_seconds, hop_seconds = check_windows(window_seconds, hop_seconds, feature_extractor.max_length_s)
    grid, num_windows = None, 0
    for onsets, audio in embed_windows(
        model, source, feature_extractor, window_seconds, hop_seconds, batch_size, progress
    ):
        similarity = audio.frame_embeds @ text_embeds.t()  # (b, T, N)
        if grid is None:
            grid = FrameGrid(source.duration, window_seconds / similarity.shape[1], text_embeds.shape[0])
        grid.add(onsets, similarity, audio.frame_mask)
        num_windows += len(onsets)
    return grid.result(num_windows)


def compute_long_audio_frame_similarity(
    model,
    audio: AudioInput,
    text_inputs,
    feature_extractor,
    sampling_rate: int | None = None,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    progress: bool = True,
    text_embeds: torch.Tensor | None = None,
) -> LongAudioFrameSimilarity:
    """Frame-text cosines of a recording of any length, stitched on an absolute time axis.

    Args:
        model: an [`MGAClapModel`] (anything with its `get_audio_features` / `get_text_features`).
        audio: any form of [`~audio_input.open_audio`]: an array `(samples,)` at `sampling_rate`, a path or the bytes
            of a file (read window by window: bounded memory for any length), a `datasets` Audio cell, a decoder.
        text_inputs (`Mapping`): tokenised queries (`input_ids`, `attention_mask`, `token_type_ids`); `None` when
            `text_embeds` is given.
        feature_extractor ([`MGAClapFeatureExtractor`]): the model's front end.
        sampling_rate (`int`, *optional*): rate of an array; defaults to the extractor's. Other rates are resampled
            window by window.
        window_seconds (`float`, *optional*): window length, between 1 s and the extractor's `max_length_s` (10 s,
            the default).
        hop_seconds (`float`, *optional*, defaults to 5.0): distance between window starts (<= `window_seconds`).
        batch_size (`int`, *optional*, defaults to 8): windows per model call; bounds the memory.
        progress (`bool`, *optional*, defaults to `True`): a progress bar in windows.
        text_embeds (`torch.Tensor` of shape `(queries, D)`, *optional*): normalised global text embeddings computed
            by the caller (e.g. once for a whole data set) instead of `text_inputs`.

    Returns:
        [`LongAudioFrameSimilarity`].
    """
    if text_embeds is None:
        with torch.no_grad():
            device = next(model.parameters()).device
            inputs = {key: value.to(device) for key, value in text_inputs.items() if value is not None}
            text_embeds = model.get_text_features(**inputs).pooler_output
    with open_audio(audio, sampling_rate, default_rate=feature_extractor.sampling_rate) as source:
        return frame_similarity_of_source(
            model, source, text_embeds, feature_extractor, window_seconds, hop_seconds, batch_size, progress
        )


def frame_similarity_of_queries(
    model,
    processor,
    audio: AudioInput,
    queries: list[str],
    *,
    sampling_rate: int | None = None,
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    progress: bool = False,
) -> LongAudioFrameSimilarity:
    """[`compute_long_audio_frame_similarity`] of prompted text `queries`, each embedded once (global embeddings
    only): what event detection and the temporal relations ground their phrases with."""
    text_embeds = embed_text(model, processor, queries, return_word_embeds=False).text_embeds
    return compute_long_audio_frame_similarity(
        model,
        audio,
        None,
        processor.feature_extractor,
        sampling_rate=sampling_rate,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        batch_size=batch_size,
        progress=progress,
        text_embeds=text_embeds,
    )


def detect_sound_events(
    model,
    audio: AudioInput,
    labels: list[str],
    processor=None,
    sampling_rate: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    hypothesis_template: str = "{}",
    window_seconds: float | None = None,
    hop_seconds: float = DEFAULT_HOP_SECONDS,
    batch_size: int = DEFAULT_WINDOW_BATCH_SIZE,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    score_reduction: str = "max",
    progress: bool = True,
) -> list[dict]:
    """Zero-shot sound event detection on a recording of any length.

    Args:
        model: an [`MGAClapModel`].
        audio: any form of [`~audio_input.open_audio`] (an array at `sampling_rate`, a path, file bytes, a `datasets`
            Audio cell, a decoder); files are read window by window.
        labels (`list[str]`): class names or free-text phrases, each once (see
            [`~processing_mgaclap.check_labels`]); each becomes `hypothesis_template` with its `{}` replaced by the
            label (default `"{}"`: the bare label, as the official SED script).
        processor ([`MGAClapProcessor`]): the feature extractor and the tokenizer (a pipeline works too).
        sampling_rate (`int`, *optional*): rate of an array; defaults to the extractor's (32 kHz).
        threshold, median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction:
            see [`~processing_mgaclap.post_process_sound_event_detection`].
        window_seconds, hop_seconds, batch_size, progress: see [`compute_long_audio_frame_similarity`].

    Returns:
        `list[dict]`: events `{"label", "onset", "offset", "score"}` in seconds from the start of the recording,
        sorted by onset; every offset is at most the recording's duration.

    Raises:
        `ValueError`: a label, template or option [`check_detection_options`] refuses (before any audio is read), or
            audio the audio input layer refuses.
    """
    if processor is None:
        raise ValueError("Pass the model's `processor` (feature extractor and tokenizer).")
    labels = check_labels(labels)
    options = check_detection_options(
        max_window_seconds=processor.feature_extractor.max_length_s,
        threshold=threshold,
        median_filter_frames=median_filter_frames,
        min_gap_seconds=min_gap_seconds,
        min_duration_seconds=min_duration_seconds,
        window_seconds=window_seconds,
        hop_seconds=hop_seconds,
        score_reduction=score_reduction,
    )
    stitched = frame_similarity_of_queries(
        model,
        processor,
        audio,
        format_queries(labels, hypothesis_template),
        sampling_rate=sampling_rate,
        window_seconds=options.pop("window_seconds"),
        hop_seconds=options.pop("hop_seconds"),
        batch_size=batch_size,
        progress=progress,
    )
    return post_process_sound_event_detection(
        stitched.frame_similarity,
        stitched.frame_boundaries,
        labels,
        frame_mask=stitched.frame_mask,
        duration=stitched.duration,
        **options,
    )[0]


__all__ = [
    "FrameGrid",
    "LongAudioFrameSimilarity",
    "check_detection_options",
    "check_windows",
    "compute_long_audio_frame_similarity",
    "detect_sound_events",
    "embed_windows",
    "frame_similarity_of_queries",
    "frame_similarity_of_source",
    "window_starts",
]
