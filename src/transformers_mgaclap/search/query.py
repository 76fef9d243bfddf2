"""Searching a frame-level index: the best frames of a text or audio query, decoded into moments."""

import math
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from ..audio_input import AudioInput
from ..embedding import embed_text
from ..processing_mgaclap import check_event_options, post_process_sound_event_detection
from .index import FRAMES_PER_MOMENT, SoundIndex, cosines, embed_recording

logger = logging.get_logger(__name__)


def embed_query(index: SoundIndex, query: str | AudioInput, sampling_rate: int | None = None) -> np.ndarray:
    """The normalised query vector `(D,)` float32: a text's embedding, or an example clip's global embedding
    (a clip longer than a window is the mean of its windows, as a recording's).

    Raises:
        `ValueError`: an empty text query, or an index without its model.
    """
    if index.model is None or index.processor is None:
        raise ValueError(
            "This index has no model to embed queries: open it with `load_index(path, model, processor)`."
        )
    if isinstance(query, str):
        if not query.strip():
            raise ValueError(
                "The query is empty: give a description such as 'a dog barks', or an audio clip."
            )
        embedded = embed_text(index.model, index.processor, [query], return_word_embeds=False).text_embeds[0]
    else:
        settings = index.settings
        embedded = embed_recording(
            index.model,
            index.processor.feature_extractor,
            query,
            sampling_rate=sampling_rate,
            name="The query audio",
            window_seconds=settings["window_seconds"],
            hop_seconds=settings["hop_seconds"],
        )["clip"]
    return embedded.float().cpu().numpy()


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    return int(value)


def _candidate_frames(index: SoundIndex, query: np.ndarray, num_frames: int, num_clips: int | None):
    """The best `num_frames` frames `(scores, rows)`, over all recordings or within the `num_clips` best clips."""
    if num_clips is None:
        return index.nearest("frames", query, num_frames)
    _, clips = index.nearest("recordings", query, num_clips)
    firsts, counts = index.column("recordings", "first_frame"), index.column("recordings", "num_frames")
    rows = np.concatenate(
        [np.arange(firsts[c], firsts[c] + counts[c], dtype=np.int64) for c in clips.tolist()]
    )
    scores = cosines(index.rows("frames").take(rows), query)
    order = np.argsort(-scores, kind="stable")[:num_frames]
    return scores[order], rows[order]


def search(
    index: SoundIndex,
    query: str | AudioInput,
    k: int = 10,
    *,
    num_clips: int | None = None,
    num_frames: int | None = None,
    threshold: float | None = None,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    score_reduction: str = "max",
    sampling_rate: int | None = None,
) -> list[dict]:
    """The `k` best moments of the collection for a text (or an example clip).

    1. The query is embedded ([`embed_query`]); a `str` is text, anything else audio (an array at
       `sampling_rate`, a `pathlib.Path`, file bytes, a `datasets` Audio cell).
    2. The best `num_frames` frames are retrieved; with `num_clips`, only within the `num_clips` recordings whose
       clip embeddings are nearest (a clip-level first stage).
    3. Each recording holding one of them is decoded into moments by
       [`~processing_mgaclap.post_process_sound_event_detection`] on its whole frame curve: frames at or above
       `threshold` (default: the score of the last frame retrieved) are active, the median filter and the gap rule
       merge neighbours. Recordings are visited best frame first, and the visit stops once `k` moments score more
       than any unvisited recording's best frame can give.

    Args:
        index ([`SoundIndex`]): from [`build_index`] or [`load_index`].
        query (`str` or audio): the description, or an example clip.
        k (`int`): moments to return.
        num_clips (`int`, *optional*): size of the clip-level first stage; default: none, all recordings.
        num_frames (`int`, *optional*): frames retrieved; default `10 * k` (about 3 s of audio per moment).
        threshold (`float`, *optional*): activity threshold on the cosines; default: as in step 3.
        median_filter_frames, min_gap_seconds, min_duration_seconds, score_reduction: the event decoder's.
        sampling_rate (`int`, *optional*): the rate of an array query.

    Returns:
        `list[dict]`: at most `k` moments, best first: `recording` (its id), `row` (in the source), `index_row` (in
        `index.recordings`), `onset`, `offset` (seconds), `score` (the decoder's score of the moment), `clip_score`
        (cosine of the query with the recording's clip embedding) and `threshold` (the activity threshold used).

    Raises:
        `ValueError`: an empty query, `k` < 1, a bad option.
    """
    checked = _checked_options(
        k,
        num_clips,
        num_frames,
        threshold,
        median_filter_frames,
        min_gap_seconds,
        min_duration_seconds,
        score_reduction,
    )  # before the model runs
    return _search_vector(index, embed_query(index, query, sampling_rate), *checked)


def search_by_embedding(
    index: SoundIndex,
    query: np.ndarray,
    k: int = 10,
    *,
    num_clips: int | None = None,
    num_frames: int | None = None,
    threshold: float | None = None,
    median_filter_frames: int = 3,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    score_reduction: str = "max",
) -> list[dict]:
    """[`search`] with the query already embedded: `query` (`np.ndarray` of shape `(D,)`) as [`embed_query`]
    returns it; steps 2 and 3 of [`search`], whose arguments these are."""
    checked = _checked_options(
        k,
        num_clips,
        num_frames,
        threshold,
        median_filter_frames,
        min_gap_seconds,
        min_duration_seconds,
        score_reduction,
    )
    vector = np.asarray(query, dtype=np.float32)
    if vector.shape != (index.rows("frames").dim,):
        raise ValueError(f"`query` must be a ({index.rows('frames').dim},) embedding, got {vector.shape}.")
    return _search_vector(index, vector, *checked)


def _checked_options(
    k,
    num_clips,
    num_frames,
    threshold,
    median_filter_frames,
    min_gap_seconds,
    min_duration_seconds,
    score_reduction,
) -> tuple[int, int | None, int, bool, dict]:
    """`(k, num_clips, num_frames, threshold given, decoder options)`, validated."""
    k = _check_count("k", k)
    num_frames = _check_count("num_frames", num_frames) if num_frames is not None else FRAMES_PER_MOMENT * k
    if num_clips is not None:
        num_clips = _check_count("num_clips", num_clips)
    options = check_event_options(
        0.0 if threshold is None else threshold,
        median_filter_frames,
        min_gap_seconds,
        min_duration_seconds,
        score_reduction,
    )
    return k, num_clips, num_frames, threshold is not None, options


def _search_vector(
    index: SoundIndex,
    vector: np.ndarray,
    k: int,
    num_clips: int | None,
    num_frames: int,
    fixed: bool,
    options: dict,
) -> list[dict]:
    """Steps 2 and 3 of [`search`] for a normalised query vector `(D,)`."""
    scores, rows = _candidate_frames(index, vector, num_frames, num_clips)
    if len(rows) == 0:
        return []
    if not fixed:
        options = {**options, "threshold": float(scores.min())}
    segments = _segments(index, rows, options)
    curves = [_curve(index, start, stop, vector) for _, start, stop in segments]
    longest = max(len(scores) for _, scores in curves)
    # One decoder call for all the segments: right-padded, the padding masked (its boundaries repeat the last one).
    padded = np.zeros((len(curves), longest, 1), dtype=np.float32)
    boundaries = np.zeros((len(curves), longest + 1), dtype=np.float64)
    mask = np.zeros((len(curves), longest), dtype=np.int64)
    for number, (edges, curve) in enumerate(curves):
        padded[number, : len(curve), 0] = curve
        boundaries[number, : len(edges)] = edges
        boundaries[number, len(edges) :] = edges[-1]
        mask[number, : len(curve)] = 1
    recordings = [recording for recording, _, _ in segments]
    events = post_process_sound_event_detection(
        torch.from_numpy(padded),
        torch.from_numpy(boundaries),
        ["query"],
        frame_mask=torch.from_numpy(mask),
        duration=index.column("recordings", "duration")[recordings].astype(np.float64),
        **options,
    )
    clip_scores = cosines(index.rows("recordings").take(recordings), vector)
    moments = [
        {
            "recording": index.column("recordings", "recording_id")[recording],
            "row": int(index.column("recordings", "row")[recording]),
            "index_row": recording,
            "onset": event["onset"],
            "offset": event["offset"],
            "score": event["score"],
            "clip_score": float(clip_score),
            "threshold": options["threshold"],
        }
        for recording, clip_score, found in zip(recordings, clip_scores, events, strict=True)
        for event in found
    ]
    return sorted(moments, key=_rank)[:k]


def _rank(moment: dict) -> tuple:
    return (-moment["score"], moment["row"], moment["onset"])


def _segments(index: SoundIndex, rows: np.ndarray, options: dict) -> list[tuple[int, int, int]]:
    """`(recording, start, stop)` frame ranges to decode, in order of their recording's best frame: the retrieved
    frames of a recording, grouped where they lie close enough for one event to join them, each group widened by
    `margin = 2 * (median // 2) + 1` frames (clipped to the recording).

    Frames outside hold no retrieved frame, so below the threshold (exactly so for exact search). A frame turns
    active only within `median // 2` of a retrieved one, and the gap rule joins active runs at most `max_gap` frames
    apart; groups further apart than `max_gap + 2 * margin + 1` frames can share no event, and their segments do not
    overlap. Past the margin no median window around an active frame reaches, and the frames whose filtered value a
    segment's edge changes (mirrored instead of continued) stay inactive and outside every event. So the events are
    those of the whole recording's curve, at a fraction of its cost for long files.
    """
    margin = 2 * (max(options["median_filter_frames"], 1) // 2) + 1
    recording_of = index.column("frames", "recording")[rows]
    onsets, offsets = index.column("frames", "onset"), index.column("frames", "offset")
    firsts = index.column("recordings", "first_frame")
    counts = index.column("recordings", "num_frames")
    segments = []
    for recording in dict.fromkeys(recording_of.tolist()):
        own = np.sort(rows[recording_of == recording])
        hop = float(
            (offsets[own] - onsets[own]).max()
        )  # the grid step (only a recording's last frame is shorter)
        max_gap = math.ceil(options["min_gap_seconds"] / hop - 1e-6) if options["min_gap_seconds"] > 0 else 0
        breaks = np.flatnonzero(np.diff(own) > max_gap + 2 * margin + 1)
        first, last = int(firsts[recording]), int(firsts[recording] + counts[recording])
        for group in np.split(own, breaks + 1):
            segments.append(
                (recording, max(first, int(group[0]) - margin), min(last, int(group[-1]) + 1 + margin))
            )
    return segments


def _curve(index: SoundIndex, start: int, stop: int, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(boundaries (L + 1,), cosines (L,))` of the frames `[start, stop)` of one recording."""
    scores = cosines(index.rows("frames").range(start, stop), query)
    onsets = index.column("frames", "onset")[start:stop]
    return np.append(onsets, index.column("frames", "offset")[stop - 1]), scores


def recording_curve(index: SoundIndex, recording: int, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame curve of one whole recording: `(boundaries, scores)`, `(F + 1,)` seconds and `(F,)` float32 cosines
    of its stored frames with the normalised `query` `(D,)` (as [`embed_query`] gives it)."""
    first = int(index.column("recordings", "first_frame")[recording])
    return _curve(index, first, first + int(index.column("recordings", "num_frames")[recording]), query)
