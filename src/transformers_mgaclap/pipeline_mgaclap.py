"""`zero-shot-audio-event-detection`: a custom transformers pipeline for MGA-CLAP frame-level detection.

Importing `transformers_mgaclap` registers the task. `pipe.save_pretrained(folder)` writes
`"custom_pipelines": {"zero-shot-audio-event-detection": {"impl": "pipeline_mgaclap.MGAClapZeroShotAudioEventDetectionPipeline",
"pt": ["AutoModel"], "type": "multimodal", ...}}` into `config.json` and copies this module (and the flat modules it
imports) next to the weights, so that `pipeline("zero-shot-audio-event-detection", model=folder,
trust_remote_code=True)` works where the package is not installed.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .audio_input import open_audio
from .embedding import embed_text
from .processing_mgaclap import (
    DEFAULT_THRESHOLD,
    check_labels,
    format_queries,
    post_process_sound_event_detection,
)
from .sound_event_detection import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_WINDOW_BATCH_SIZE,
    check_detection_options,
    frame_similarity_of_source,
)
from .temporal_relations import parse_relations, relation_phrases, score_relations

TASK = "zero-shot-audio-event-detection"

_PREPROCESS_KEYS = ("candidate_labels", "hypothesis_template", "relations")
_FORWARD_KEYS = ("window_seconds", "hop_seconds", "window_batch_size", "progress")
_POSTPROCESS_KEYS = (
    "threshold",
    "median_filter_frames",
    "min_gap_seconds",
    "min_duration_seconds",
    "score_reduction",
)
# What `check_detection_options` checks, at call time, before any audio is read.
_OPTION_KEYS = ("window_seconds", "hop_seconds", *_POSTPROCESS_KEYS)


def _check_mono(audio: Any) -> None:
    """Refuse a multi-channel array: as transformers' audio pipelines, one input is one mono recording (the
    processor would take a `(2, N)` array for two clips, the audio layer for two channels)."""
    array = audio.get("array", audio.get("raw")) if isinstance(audio, Mapping) else audio
    if isinstance(array, (np.ndarray, torch.Tensor)) and array.ndim != 1:
        raise ValueError(
            f"{TASK} takes one mono recording per input, got an array of shape {tuple(array.shape)}: mix it down "
            "with `audio.mean(0)`, or pass a list of recordings."
        )


class MGAClapZeroShotAudioEventDetectionPipeline(Pipeline):
    """Zero-shot sound event detection / text-to-audio grounding with MGA-CLAP, for recordings of any length.

    Every candidate label (a class name or a free-text phrase) is scored against every 10/32 s frame; the curves are
    median-filtered, thresholded and turned into events with onsets and offsets in seconds.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> detector = pipeline("zero-shot-audio-event-detection", model="path/to/mgaclap", trust_remote_code=True)
    >>> detector("recording.wav", candidate_labels=["dog barking", "speech"], threshold=0.3)
    [{'label': 'speech', 'onset': 1.25, 'offset': 4.0625, 'score': 0.41}, ...]
    ```
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def __call__(self, audio, **kwargs: Any) -> list[dict[str, Any]]:
        """Detect the candidate labels in `audio`.

        Args:
            audio (`np.ndarray`, `str`, `bytes` or `dict`, or a list of them):
                Any form of the package's audio input layer (`audio_input.open_audio`): a mono float array
                `(samples,)` at the feature extractor's rate (32 kHz; a 2-D array is refused: mix it down, or pass a
                list of recordings); a path to an audio file (multi-channel files are mixed down) or its
                bytes (read window by window, so recordings of any length fit in memory); a `datasets` Audio cell or
                `{"array": np.ndarray, "sampling_rate": int}` (`"raw"` is accepted for `"array"`). Other rates are
                resampled window by window.
            candidate_labels (`list[str]`): class names or phrases, each once.
            hypothesis_template (`str`, *optional*, defaults to `"{}"`): prompt format, with `{}` exactly once where
                the label goes; the official SED prompt is the bare label.
            threshold (`float`, *optional*, defaults to 0.5): activity threshold on the filtered raw cosine.
            median_filter_frames (`int`, *optional*, defaults to 3), min_gap_seconds (`float`, *optional*, defaults
                to 0.5), min_duration_seconds (`float`, *optional*, defaults to 0), score_reduction (`str`, *optional*,
                defaults to `"max"`): see `post_process_sound_event_detection`.
            window_seconds (`float`, *optional*, defaults to 10; between 1 and the extractor's `max_length_s`),
                hop_seconds (`float`, *optional*, defaults to 5), window_batch_size (`int`, *optional*, defaults to
                8): how long audio is cut and batched.
            progress (`bool`, *optional*, defaults to `False`): tqdm progress bar over the window batches.
            relations (`str` or `list[str]`, *optional*): captions relating events, e.g. `"dog barking before car
                horn"`, scored training-free from the same frame curves (`temporal_relations.parse_relation` gives
                the grammar; a caption outside it is refused before any audio is read).

        Returns:
            `list[dict]` (a list of them for a list of inputs): events `{"label", "onset", "offset", "score"}`, in
            seconds from the start of the audio (offsets at most its duration), sorted by onset. With `relations`:
            `{"events": <those events>, "relations": [...]}`, one `temporal_relations.score_relation` result per
            caption (`"caption"`, `"relation"`, `"events"`, `"score"` in [0, 1], and per consecutive pair of events
            `"margins"` in seconds and `"co_activations"`).

        Raises:
            `ValueError`: the labels, template and options are checked as by `detect_sound_events` and the endpoint
                handler (same checks, same messages), before any audio is read.
        """
        return super().__call__(audio, **kwargs)

    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PREPROCESS_KEYS + _FORWARD_KEYS + _POSTPROCESS_KEYS)
        if unknown:
            raise TypeError(f"Unexpected arguments for {TASK}: {sorted(unknown)}.")
        check_detection_options(
            max_window_seconds=self.feature_extractor.max_length_s,
            **{key: kwargs[key] for key in _OPTION_KEYS if key in kwargs},
        )
        preprocess = {key: kwargs[key] for key in _PREPROCESS_KEYS if key in kwargs}
        if preprocess.get("relations") is not None:
            # Parsed at call time, as the options are checked: a caption outside the grammar is refused before any
            # audio is read.
            preprocess["relations"] = parse_relations(preprocess["relations"])
        forward = {key: kwargs[key] for key in _FORWARD_KEYS if key in kwargs}
        postprocess = {key: kwargs[key] for key in _POSTPROCESS_KEYS if key in kwargs}
        return preprocess, forward, postprocess

    def preprocess(self, audio, candidate_labels=None, hypothesis_template="{}", relations=None):
        if candidate_labels is None:
            raise ValueError("Pass `candidate_labels`: the class names or phrases to detect.")
        labels = check_labels(candidate_labels)
        _check_mono(audio)
        # `relations` arrive parsed (`_sanitize_parameters`). Their phrases are grounded with the labels in one pass;
        # a phrase that is also a label is embedded once.
        phrases = labels + [p for p in relation_phrases(relations or []) if p not in labels]
        # The audio is only opened in `_forward`, window by window: a long file is never decoded whole.
        return {
            "audio": audio,
            "candidate_labels": labels,
            "relations": relations,
            "phrases": phrases,
            "queries": format_queries(phrases, hypothesis_template),
        }

    def _forward(
        self,
        model_inputs,
        window_seconds=None,
        hop_seconds=DEFAULT_HOP_SECONDS,
        window_batch_size=DEFAULT_WINDOW_BATCH_SIZE,
        progress=False,
    ):
        text_embeds = embed_text(
            self.model, self, model_inputs["queries"], return_word_embeds=False
        ).text_embeds
        with open_audio(model_inputs["audio"], default_rate=self.feature_extractor.sampling_rate) as source:
            stitched = frame_similarity_of_source(
                self.model,
                source,
                text_embeds,
                self.feature_extractor,
                window_seconds=window_seconds,
                hop_seconds=hop_seconds,
                batch_size=window_batch_size,
                progress=progress,
            )
        return {
            "candidate_labels": model_inputs["candidate_labels"],
            "relations": model_inputs["relations"],
            "phrases": model_inputs["phrases"],
            "frame_similarity": stitched.frame_similarity,
            "frame_boundaries": stitched.frame_boundaries,
            "frame_mask": stitched.frame_mask,
            "duration": stitched.duration,
        }

    def postprocess(
        self,
        model_outputs,
        threshold=DEFAULT_THRESHOLD,
        median_filter_frames=3,
        min_gap_seconds=0.5,
        min_duration_seconds=0.0,
        score_reduction="max",
    ):
        labels = model_outputs["candidate_labels"]
        events = post_process_sound_event_detection(
            model_outputs["frame_similarity"][:, : len(labels)],
            model_outputs["frame_boundaries"],
            labels,
            threshold=threshold,
            median_filter_frames=median_filter_frames,
            min_gap_seconds=min_gap_seconds,
            min_duration_seconds=min_duration_seconds,
            frame_mask=model_outputs["frame_mask"],
            score_reduction=score_reduction,
            duration=model_outputs["duration"],
        )[0]
        if model_outputs["relations"] is None:
            return events
        relations = score_relations(
            model_outputs["relations"],
            model_outputs["frame_similarity"],
            model_outputs["frame_boundaries"],
            model_outputs["phrases"],
            model_outputs["frame_mask"],
        )
        return {"events": events, "relations": relations}


__all__ = ["MGAClapZeroShotAudioEventDetectionPipeline", "TASK"]
