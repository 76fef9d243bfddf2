"""Processor for MGA-CLAP: the log-mel feature extractor and a BERT tokenizer behind one call.

Also holds the frame-level post-processing of zero-shot sound event detection / text-to-audio grounding
(`post_process_sound_event_detection`), pure torch so that it travels with the model as remote code.
"""

import math
import numbers
import reprlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature, ProcessorMixin

from .feature_extraction_mgaclap import CALL_ARGUMENTS as AUDIO_ARGUMENTS
from .feature_extraction_mgaclap import EQUIVALENTS, unexpected_arguments_message

# The official text encoder keeps 30 WordPiece tokens, [CLS] and [SEP] included (docs/official-implementation.md §5).
MAX_TEXT_LENGTH = 30
# Sound event detection scores are raw cosines, which have no universal operating point: tune the threshold per
# checkpoint and vocabulary (the official SED evaluation is threshold-free; grounding sweeps 50 thresholds).
DEFAULT_THRESHOLD = 0.5
# Keyword arguments of `__call__`, named in the error an unknown one raises: its own, then the extractor's.
CALL_ARGUMENTS = ("text", "audio", "max_length", *AUDIO_ARGUMENTS)
# Tokenizer arguments the processor fixes, and what to do instead.
_EQUIVALENTS = {
    **EQUIVALENTS,
    "padding": f"nothing: text is padded to the longest caption; audio padding is {EQUIVALENTS['padding']}",
    "truncation": f"`max_length` for text; audio truncation is {EQUIVALENTS['truncation']}",
}


class MGAClapProcessor(ProcessorMixin):
    r"""
    Wraps an [`MGAClapFeatureExtractor`] and a BERT tokenizer.

    Text is tokenised as the official MGA-CLAP: at most 30 tokens including [CLS] and [SEP], truncated, padded to
    the longest caption of the batch. Audio goes through the feature extractor (32 kHz, 10 s, log-mel).

    Example:

    ```python
    >>> inputs = processor(text=["a dog barks"], audio=waveform, sampling_rate=32000, return_tensors="pt")
    >>> sorted(inputs.keys())
    ['attention_mask', 'input_features', 'input_features_mask', 'input_ids', 'token_type_ids']
    ```
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio=None,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        max_length: int = MAX_TEXT_LENGTH,
        **audio_kwargs,
    ) -> BatchFeature:
        """Tokenise `text` and/or extract features of `audio`.

        Args:
            text (`str` or `list[str]`, *optional*): captions or class names; empty strings are an error.
            audio (*optional*): one waveform or a list of waveforms (see [`MGAClapFeatureExtractor.__call__`]).
            sampling_rate (`int`, *optional*): rate of `audio`; a rate other than the extractor's is an error
                unless `resample=True` is passed.
            return_tensors (`str`, *optional*): `"pt"`, `"np"`, ...
            max_length (`int`, *optional*, defaults to 30): token limit, special tokens included (the model also
                cuts its input at `config.max_text_length`, whoever tokenised).
            audio_kwargs: passed to the feature extractor: `padding_mode`, `truncation_mode`, `resample`,
                `generator`. Any other keyword is an error.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `token_type_ids` (text) and `input_features`,
            `input_features_mask` (audio).
        """
        unexpected = {key: value for key, value in audio_kwargs.items() if key not in AUDIO_ARGUMENTS}
        if unexpected:
            message = unexpected_arguments_message(
                type(self).__name__, unexpected, CALL_ARGUMENTS, _EQUIVALENTS
            )
            raise TypeError(message)
        if text is None and audio is None:
            raise ValueError("Pass `text`, `audio` or both to the processor.")
        encoding = {}
        if text is not None:
            texts = check_texts(text)
            encoding.update(
                self.tokenizer(
                    texts,
                    padding="longest",
                    truncation=True,
                    max_length=max_length,
                    return_tensors=return_tensors,
                )
            )
        if audio is not None:
            encoding.update(
                self.feature_extractor(
                    audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **audio_kwargs
                )
            )
        return BatchFeature(data=encoding, tensor_type=return_tensors)

    def post_process_sound_event_detection(
        self, frame_similarity: torch.Tensor, frame_boundaries: torch.Tensor, labels: list[str], **options
    ) -> list[list[dict]]:
        """Turn frame-text similarities into sound events: [`post_process_sound_event_detection`], whose keyword
        arguments (`threshold`, `median_filter_frames`, `min_gap_seconds`, `frame_mask`, ...) `options` takes.

        Typical use: `processor.post_process_sound_event_detection(out.frame_similarity, out.frame_boundaries,
        labels, threshold=..., frame_mask=out.frame_mask, duration=seconds)` with
        `out = model.get_frame_text_similarity(...)` and `seconds` the clips' lengths (offsets are clipped to them).
        """
        return post_process_sound_event_detection(frame_similarity, frame_boundaries, labels, **options)

    @property
    def model_input_names(self) -> list[str]:
        return list(
            dict.fromkeys(self.tokenizer.model_input_names + self.feature_extractor.model_input_names)
        )


# Values in error messages: a shortened repr, so that a refusal never echoes a megabyte of request back.
_PREVIEW = reprlib.Repr()
_PREVIEW.maxstring = _PREVIEW.maxother = 60


def _preview(value: Any) -> str:
    """`repr(value)`, shortened."""
    return _PREVIEW.repr(value)


def _check_caps(texts: list[str], what: str, max_count: int | None, max_chars: int | None) -> None:
    """At most `max_count` texts of at most `max_chars` characters each (`None`: no limit)."""
    if max_count is not None and len(texts) > max_count:
        raise ValueError(f"Got {len(texts)} {what}s; at most {max_count} are accepted.")
    if max_chars is not None:
        for index, text in enumerate(texts):
            if len(text) > max_chars:
                raise ValueError(
                    f"{what.capitalize()} {index} is {len(text)} characters long; at most {max_chars} are accepted."
                )


def check_texts(
    texts: str | Sequence[str], max_texts: int | None = None, max_chars: int | None = None
) -> list[str]:
    """One text or a list of them as a list.

    Args:
        texts (`str` or `Sequence[str]`): the texts.
        max_texts (`int`, *optional*): most texts accepted.
        max_chars (`int`, *optional*): most characters accepted per text.

    Raises:
        `ValueError`: an empty list, a text that is not a non-empty string, or more or longer texts than allowed.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("No text to embed: the list of texts is empty.")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Text {index} is empty or not a string ({_preview(text)}): nothing to embed.")
    _check_caps(texts, "text", max_texts, max_chars)
    return texts


def check_labels(
    labels: str | Iterable[str], max_labels: int | None = None, max_chars: int | None = None
) -> list[str]:
    """The candidate labels of classification and event detection, checked once for every door (the pipeline,
    [`~sound_event_detection.detect_sound_events`], the endpoint handler).

    Args:
        labels (`str` or `Iterable[str]`): class names or phrases; one string is one label.
        max_labels (`int`, *optional*): most labels accepted.
        max_chars (`int`, *optional*): most characters accepted per label.

    Returns:
        `list[str]`: the labels, in order.

    Raises:
        `ValueError`: no labels, a label that is not a non-empty string, a repeated label (it would be scored, and
            reported, twice), or more or longer labels than allowed.
    """
    if isinstance(labels, str):
        labels = [labels]
    elif isinstance(labels, (bytes, Mapping)) or not isinstance(labels, Iterable):
        raise ValueError(f"`candidate_labels` must be a string or a list of strings, got {_preview(labels)}.")
    labels = list(labels)
    if not labels:
        raise ValueError("`candidate_labels` is empty: give at least one class name or phrase.")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"Every candidate label must be a non-empty string, got {_preview(label)}.")
    _check_caps(labels, "candidate label", max_labels, max_chars)
    repeated = [label for label, count in Counter(labels).items() if count > 1]
    if repeated:
        raise ValueError(f"`candidate_labels` repeats {_preview(repeated)}: give each label once.")
    return labels


def check_template(template: str) -> str:
    """A hypothesis template: a string holding the label slot `{}` exactly once (other braces are literal text).

    Raises:
        `ValueError`: anything else.
    """
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(
            f"`hypothesis_template` must be a string containing `{{}}` exactly once, where the label goes, got "
            f"{_preview(template)}."
        )
    return template


def format_queries(labels: str | Iterable[str], template: str = "{}") -> list[str]:
    """`template` with its `{}` replaced by each label: the text queries of sound event detection and zero-shot
    classification. Only the literal `{}` is substituted (no `str.format`): other braces stay as they are.

    Raises:
        `ValueError`: see [`check_labels`] and [`check_template`].
    """
    labels = check_labels(labels)
    template = check_template(template)
    return check_texts([template.replace("{}", label) for label in labels])


def check_number(name: str, value: Any, minimum: float | None = None) -> float:
    """`value` as a float: a finite real number (not a bool), at least `minimum`; else a `ValueError` naming it."""
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or (minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ValueError(f"`{name}` must be a finite number{bound}, got {_preview(value)}.")
    return float(value)


def check_event_options(
    threshold: float = DEFAULT_THRESHOLD,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    score_reduction: str = "max",
) -> dict[str, Any]:
    """The options of [`post_process_sound_event_detection`], checked and normalised (floats, an int window).

    Raises:
        `ValueError`: a non-finite or non-numeric threshold, an even or negative median window, a negative gap or
            duration, an unknown score reduction.
    """
    median = median_filter_frames
    if (
        not isinstance(median, numbers.Real)
        or isinstance(median, bool)
        or not float(median).is_integer()
        or median < 0
        or (median > 1 and median % 2 == 0)
    ):
        raise ValueError(
            f"`median_filter_frames` must be an odd integer, or 0 or 1 for no filter, got {_preview(median)}."
        )
    if score_reduction not in ("max", "mean"):
        raise ValueError(f"`score_reduction` must be 'max' or 'mean', got {_preview(score_reduction)}.")
    return {
        "threshold": check_number("threshold", threshold),
        "median_filter_frames": int(median),
        "min_gap_seconds": check_number("min_gap_seconds", min_gap_seconds, minimum=0.0),
        "min_duration_seconds": check_number("min_duration_seconds", min_duration_seconds, minimum=0.0),
        "score_reduction": score_reduction,
    }


def median_filter_time(scores: torch.Tensor, window: int) -> torch.Tensor:
    """Running median along the first (time) axis with an odd `window`.

    Edges are handled as `scipy.ndimage.median_filter(mode="reflect")` (the official SED post-processing): the
    sequence is extended by mirroring it about its ends, sample included (`c b a | a b c | c b a`), as often as the
    window needs, so frame 0 with a 3-frame window is `median(x[0], x[0], x[1])`.

    Args:
        scores (`torch.Tensor` of shape `(time, ...)`): curves to filter.
        window (`int`): odd window length in frames; 0 or 1 returns `scores` unchanged.

    Returns:
        `torch.Tensor` of the same shape.
    """
    if window is None or window <= 1:
        return scores
    if window % 2 == 0:
        raise ValueError(f"`median_filter_frames` must be odd (or 0/1 for no filter), got {window}.")
    length, half = scores.shape[0], window // 2
    positions = torch.arange(-half, length + half, device=scores.device) % (2 * length)
    positions = torch.where(positions >= length, 2 * length - 1 - positions, positions)
    extended = scores.index_select(0, positions)  # (length + 2 * half, ...)
    return extended.unfold(0, window, 1).median(dim=-1).values


def _active_runs(active: torch.Tensor) -> list[tuple[int, int]]:
    """`(start, stop)` pairs (stop exclusive) of the runs of True in a 1-D boolean tensor."""
    padded = torch.nn.functional.pad(active.to(torch.int8), (1, 1))
    changes = torch.diff(padded).nonzero().flatten().tolist()
    return list(zip(changes[0::2], changes[1::2], strict=True))


def _event_inputs(
    frame_similarity, frame_boundaries, labels, frame_mask
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate and batch the inputs: scores `(B, T, N)` float32, boundaries `(B, T + 1)` float64, mask `(B, T)`."""
    scores = torch.as_tensor(frame_similarity).detach().cpu().float()
    if scores.dim() == 2:
        scores = scores.unsqueeze(0)
    if scores.dim() != 3:
        raise ValueError(f"`frame_similarity` must be (batch, frames, queries), got {tuple(scores.shape)}.")
    batch, num_frames, num_queries = scores.shape
    if len(labels) != num_queries:
        raise ValueError(f"Got {len(labels)} labels for {num_queries} queries.")
    boundaries = torch.as_tensor(frame_boundaries).detach().cpu().double()
    if boundaries.dim() == 1:
        boundaries = boundaries.unsqueeze(0).expand(batch, -1)
    if boundaries.shape != (batch, num_frames + 1):
        raise ValueError(
            f"`frame_boundaries` must be ({num_frames + 1},) or ({batch}, {num_frames + 1}), got "
            f"{tuple(boundaries.shape)}."
        )
    if frame_mask is None:
        return scores, boundaries, torch.ones(batch, num_frames, dtype=torch.bool)
    mask = torch.as_tensor(frame_mask).detach().cpu().bool()
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.shape != (batch, num_frames):
        raise ValueError(f"`frame_mask` must be ({batch}, {num_frames}), got {tuple(mask.shape)}.")
    return scores, boundaries, mask


def _clip_to_duration(
    boundaries: torch.Tensor, mask: torch.Tensor, duration: float | Sequence[float] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundaries `(B, T + 1)` clipped to each clip's duration, and the mask `(B, T)` without the frames that start
    at or after it."""
    batch = boundaries.shape[0]
    try:
        durations = torch.as_tensor(duration, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        durations = None
    if durations is not None and durations.dim() == 0:
        durations = durations.expand(batch)
    if (
        durations is None
        or durations.shape != (batch,)
        or not bool(((durations > 0) & durations.isfinite()).all())
    ):
        raise ValueError(
            f"`duration` must be a positive number of seconds, or one per clip ({batch}), got {_preview(duration)}."
        )
    mask = mask & (boundaries[:, :-1] < durations[:, None])
    return torch.minimum(boundaries, durations[:, None]), mask


def _gap_frames(edges: torch.Tensor, min_gap_seconds: float) -> int:
    """The longest gap, in whole frames, that `min_gap_seconds` bridges: the official `ceil(0.5 / (10 / 32)) = 2`."""
    hop = float((edges[1:] - edges[:-1]).max()) if len(edges) > 1 else 0.0  # the frame hop (uniform grids)
    if hop <= 0 or min_gap_seconds <= 0:
        return 0
    return math.ceil(min_gap_seconds / hop - 1e-6)  # the epsilon keeps 2 * hop from becoming 3 frames


def _bridge_gaps(runs: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """Merge consecutive `(start, stop)` runs separated by at most `max_gap` frames."""
    merged: list[list[int]] = []
    for start, stop in runs:
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return [(start, stop) for start, stop in merged]


def _curve_events(
    curve: torch.Tensor,
    edges: torch.Tensor,
    label: str,
    threshold: float,
    max_gap: int,
    min_duration_seconds: float,
    score_reduction: str,
) -> list[dict]:
    """Events of one filtered score curve `(L,)` whose frame `k` spans `[edges[k], edges[k + 1])` seconds."""
    events = []
    for on, off in _bridge_gaps(_active_runs(curve >= threshold), max_gap):
        onset, offset = float(edges[on]), float(edges[off])
        if offset - onset < min_duration_seconds:
            continue
        inside = curve[on:off]
        score = inside.max() if score_reduction == "max" else inside.mean()
        events.append({"label": label, "onset": onset, "offset": offset, "score": float(score)})
    return events


def post_process_sound_event_detection(
    frame_similarity: torch.Tensor,
    frame_boundaries: torch.Tensor,
    labels: list[str],
    threshold: float = DEFAULT_THRESHOLD,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    frame_mask: torch.Tensor | None = None,
    score_reduction: str = "max",
    duration: float | Sequence[float] | torch.Tensor | None = None,
) -> list[list[dict]]:
    """Sound events from frame-level query similarities (zero-shot SED and text-to-audio grounding).

    For every clip and query: take the score curve over time, median-filter it (`median_filter_frames`, odd,
    `scipy`'s "reflect" edges, see [`median_filter_time`]; applied separately to each run of valid frames so that
    padding never leaks in), keep frames with `filtered >= threshold`, connect active runs separated by at most
    `ceil(min_gap_seconds / frame_hop)` inactive frames (the official grounding rule: 0.5 s at 10/32 s per frame
    connects gaps of up to 2 frames; the gap in seconds is thus rounded *up* to whole frames), drop events shorter
    than `min_duration_seconds`, and report each remaining run.

    This is the one event decoder of the package: the pipeline, the endpoint handler, the demo and the evaluation all
    call it.

    Args:
        frame_similarity (`torch.Tensor` of shape `(batch, frames, queries)` or `(frames, queries)`):
            Scores, e.g. `MGAClapFrameSimilarityOutput.frame_similarity` (raw cosines) or a sigmoid of them.
        frame_boundaries (`torch.Tensor` of shape `(frames + 1,)` or `(batch, frames + 1)`):
            Frame `k` spans `[frame_boundaries[k], frame_boundaries[k + 1])` seconds.
        labels (`list[str]`): one name per query, reported as `"label"`.
        threshold (`float`, *optional*, defaults to 0.5): activity threshold on the filtered curve (inclusive).
        median_filter_frames (`int`, *optional*, defaults to 3): odd median window in frames; 0 or 1 disables it.
        min_gap_seconds (`float`, *optional*, defaults to 0.5): gaps up to this long (rounded up to frames) are
            bridged; 0 bridges nothing.
        min_duration_seconds (`float`, *optional*, defaults to 0): shorter events (after bridging) are dropped.
        frame_mask (`torch.Tensor` of shape `(batch, frames)` or `(frames,)`, *optional*):
            1 on frames holding real audio. Masked frames are never active, never bridged over and never filtered
            with their neighbours.
        score_reduction (`str`, *optional*, defaults to `"max"`): `"max"` or `"mean"` of the *filtered* curve over
            the event's frames (bridged gap frames included), reported as `"score"`.
        duration (`float`, or one per clip, *optional*): the length in seconds of the audio each clip holds. The
            model's frames cover its 10 s input, so the frame that holds a clip's end reaches past it: with the
            duration, frames that start at or after it are masked and every offset is clipped to it. Every door of
            the package passes it; pass it with [`MGAClapModel.get_frame_text_similarity`] on clips shorter than
            10 s.

    Returns:
        `list[list[dict]]`: per clip, events `{"label", "onset", "offset", "score"}` (seconds, floats) sorted by
        onset, then by query order.
    """
    options = check_event_options(
        threshold, median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction
    )
    scores, boundaries, mask = _event_inputs(frame_similarity, frame_boundaries, labels, frame_mask)
    if duration is not None:
        boundaries, mask = _clip_to_duration(boundaries, mask, duration)
    order = {label: index for index, label in enumerate(labels)}
    results = []
    for clip_scores, edges, clip_mask in zip(scores, boundaries, mask, strict=True):
        max_gap = _gap_frames(edges, options["min_gap_seconds"])
        events = []
        for start, stop in _active_runs(clip_mask):  # runs of valid frames
            filtered = median_filter_time(clip_scores[start:stop], options["median_filter_frames"])  # (L, N)
            for query, label in enumerate(labels):
                events += _curve_events(
                    filtered[:, query],
                    edges[start : stop + 1],
                    label,
                    options["threshold"],
                    max_gap,
                    options["min_duration_seconds"],
                    options["score_reduction"],
                )
        events.sort(key=lambda event: (event["onset"], order[event["label"]], event["offset"]))
        results.append(events)
    return results


__all__ = [
    "MGAClapProcessor",
    "check_event_options",
    "check_labels",
    "check_number",
    "check_template",
    "check_texts",
    "format_queries",
    "median_filter_time",
    "post_process_sound_event_detection",
]
