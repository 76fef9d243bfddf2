"""Frame-level scores of clips of any length, as the official SED and grounding scripts compute them.

Clips up to 10 s are repeat-padded to 10 s (official) and their frames cut at the clip's end; longer clips go through
the windowed path of [`~sound_event_detection.compute_long_audio_frame_similarity`] (the official scripts truncate).
"""

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..data.labels import label_text
from ..data.sources import iterate_waveforms
from ..embedding import embed_audio, embed_text
from ..sound_event_detection import compute_long_audio_frame_similarity
from .validation import validate_sed_events


def frame_scores(
    model,
    processor,
    waveform: np.ndarray,
    text_embeds: torch.Tensor,
    frames: torch.Tensor | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(T, Q)` float64 frame-text cosines and `(T + 1,)` boundaries in seconds for one 32 kHz clip of any length.

    Args:
        waveform (`np.ndarray` of shape `(samples,)`): at the extractor's rate.
        text_embeds (`torch.Tensor` of shape `(Q, D)`): normalised query embeddings.
        frames (`torch.Tensor` of shape `(T, D)`, *optional*): the clip's normalised repeat-padded frames when the
            caller embedded them already (clips up to 10 s only).
        progress (`bool`): a bar in windows for a clip longer than 10 s.
    """
    extractor = processor.feature_extractor
    duration = len(waveform) / extractor.sampling_rate
    if duration > extractor.max_length_s:
        stitched = compute_long_audio_frame_similarity(
            model, waveform, None, extractor, progress=progress, text_embeds=text_embeds
        )
        return stitched.frame_similarity.double(), stitched.frame_boundaries
    if frames is None:
        frames = embed_audio(model, processor, [waveform], padding_mode="repeatpad").frame_embeds[0].cpu()
    step = extractor.max_length_s / frames.shape[0]
    num_frames = min(frames.shape[0], math.ceil(duration / step - 1e-9))
    scores = frames[:num_frames].double() @ text_embeds.double().cpu().t()
    boundaries = (torch.arange(num_frames + 1, dtype=torch.float64) * step).clamp(max=duration)
    return scores, boundaries


def iterate_frame_scores(
    model,
    processor,
    dataset,
    audio_column: str,
    batch_size: int,
    queries_of_row: Callable[[int], torch.Tensor],
    progress: bool = False,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, float]]:
    """Per row, in order: `(index, scores (T, Q), boundaries (T + 1,), duration)` for the queries
    `queries_of_row(index)` picks. Clips up to 10 s are embedded a batch at a time, longer ones one by one.
    `progress`: a bar in clips, and one in windows while a clip longer than 10 s is scored."""
    rate = processor.feature_extractor.sampling_rate
    limit = processor.feature_extractor.max_length_s * rate
    batches = iterate_waveforms(dataset, audio_column, rate, batch_size, progress, "Scoring frames")
    for indices, waveforms in batches:
        short = [k for k, waveform in enumerate(waveforms) if len(waveform) <= limit]
        frames_of = {}
        if short:
            short_frames = embed_audio(
                model,
                processor,
                [waveforms[k] for k in short],
                padding_mode="repeatpad",
                batch_size=batch_size,
            ).frame_embeds.cpu()
            frames_of = dict(zip(short, short_frames, strict=True))
        for position, (index, waveform) in enumerate(zip(indices, waveforms, strict=True)):
            scores, boundaries = frame_scores(
                model, processor, waveform, queries_of_row(index), frames_of.get(position), progress
            )
            yield index, scores, boundaries, len(waveform) / rate


def frame_accuracy(
    model, processor, dataset, audio_column: str = "audio", batch_size: int = 16, progress: bool = False
) -> float:
    """Share of frames inside exactly one reference event whose best-scoring class (of all classes) is that event's.

    A diagnostic of frame-level alignment that depends neither on thresholds nor on event boundaries. `dataset` has
    the SED columns (`audio`, `events`), validated as for the SED task; classes are prompted as the official SED
    script (the bare label). `progress`: a bar in clips.
    """
    validated = validate_sed_events(dataset, "events", audio_column)
    events, classes = validated.references, validated.classes
    queries = [label_text(c).lower() for c in classes]
    text = embed_text(model, processor, queries, batch_size=batch_size).text_embeds.cpu()
    hits = total = 0
    for index, scores, boundaries, _ in iterate_frame_scores(
        model, processor, dataset, audio_column, batch_size, lambda _: text, progress
    ):
        centres = ((boundaries[:-1] + boundaries[1:]) / 2).numpy()
        for frame, centre in enumerate(centres):
            active = {e["event_label"] for e in events[index] if e["onset"] <= centre < e["offset"]}
            if len(active) == 1:
                total += 1
                hits += classes[int(scores[frame].argmax())] in active
    return hits / max(total, 1)


__all__ = ["frame_accuracy", "frame_scores", "iterate_frame_scores"]
