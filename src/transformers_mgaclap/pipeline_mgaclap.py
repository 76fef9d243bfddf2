"""`zero-shot-audio-event-detection`: a custom transformers pipeline for MGA-CLAP frame-level detection.

Importing `transformers_mgaclap` registers the task. `pipe.save_pretrained(folder)` writes
`"custom_pipelines": {"zero-shot-audio-event-detection": {"impl": "pipeline_mgaclap.MGAClapZeroShotAudioEventDetectionPipeline",
"pt": ["AutoModel"], "type": "multimodal", ...}}` into `config.json` and copies this module (and the flat modules it
imports) next to the weights, so that `pipeline("zero-shot-audio-event-detection", model=folder,
trust_remote_code=True)` works where the package is not installed.
"""

from typing import Any

from transformers import Pipeline

from .audio_input import open_audio
from .embedding import embed_text
from .processing_mgaclap import DEFAULT_THRESHOLD, format_queries, post_process_sound_event_detection
from .sound_event_detection import DEFAULT_HOP_SECONDS, DEFAULT_WINDOW_BATCH_SIZE, frame_similarity_of_source

TASK = "zero-shot-audio-event-detection"

_PREPROCESS_KEYS = ("candidate_labels", "hypothesis_template")
_FORWARD_KEYS = ("window_seconds", "hop_seconds", "window_batch_size", "progress")
_POSTPROCESS_KEYS = (
    "threshold",
    "median_filter_frames",
    "min_gap_seconds",
    "min_duration_seconds",
    "score_reduction",
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
                Any form of the package's audio input layer (`audio_input.open_audio`): a float array `(samples,)`
                or `(channels, samples)` at the feature extractor's rate (32 kHz); a path to an audio file or its
                bytes (read window by window, so recordings of any length fit in memory); a `datasets` Audio cell or
                `{"array": np.ndarray, "sampling_rate": int}` (`"raw"` is accepted for `"array"`). Other rates are
                resampled window by window.
            candidate_labels (`list[str]`): class names or phrases.
            hypothesis_template (`str`, *optional*, defaults to `"{}"`): prompt format; the official SED prompt is the
                bare label.
            threshold (`float`, *optional*, defaults to 0.5): activity threshold on the filtered raw cosine.
            median_filter_frames (`int`, *optional*, defaults to 3), min_gap_seconds (`float`, *optional*, defaults
                to 0.5), min_duration_seconds (`float`, *optional*, defaults to 0), score_reduction (`str`, *optional*,
                defaults to `"max"`): see `post_process_sound_event_detection`.
            window_seconds (`float`, *optional*, defaults to 10), hop_seconds (`float`, *optional*, defaults to 5),
                window_batch_size (`int`, *optional*, defaults to 8): how long audio is cut and batched.
            progress (`bool`, *optional*, defaults to `False`): tqdm progress bar over the window batches.

        Returns:
            `list[dict]` (a list of them for a list of inputs): events `{"label", "onset", "offset", "score"}`, in
            seconds from the start of the audio, sorted by onset.
        """
        return super().__call__(audio, **kwargs)

    def _sanitize_parameters(self, **kwargs):
        unknown = set(kwargs) - set(_PREPROCESS_KEYS + _FORWARD_KEYS + _POSTPROCESS_KEYS)
        if unknown:
            raise TypeError(f"Unexpected arguments for {TASK}: {sorted(unknown)}.")
        preprocess = {key: kwargs[key] for key in _PREPROCESS_KEYS if key in kwargs}
        forward = {key: kwargs[key] for key in _FORWARD_KEYS if key in kwargs}
        postprocess = {key: kwargs[key] for key in _POSTPROCESS_KEYS if key in kwargs}
        return preprocess, forward, postprocess

    def preprocess(self, audio, candidate_labels=None, hypothesis_template="{}"):
        if candidate_labels is None:
            raise ValueError("Pass `candidate_labels`: the class names or phrases to detect.")
        labels = [candidate_labels] if isinstance(candidate_labels, str) else list(candidate_labels)
        # The audio is only opened in `_forward`, window by window: a long file is never decoded whole.
        return {
            "audio": audio,
            "candidate_labels": labels,
            "queries": format_queries(labels, hypothesis_template),
        }

    def _forward(
        self,
        model_inputs,
        window_seconds=None,
        hop_seconds=DEFAULT_HOP_SECONDS,
        window_batch_size=DEFAULT_WINDOW_BATCH_SIZE,
        progress=False,
    ):
        text_embeds = embed_text(self.model, self, model_inputs["queries"]).text_embeds
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
            "frame_similarity": stitched.frame_similarity,
            "frame_boundaries": stitched.frame_boundaries,
            "frame_mask": stitched.frame_mask,
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
        return post_process_sound_event_detection(
            model_outputs["frame_similarity"],
            model_outputs["frame_boundaries"],
            model_outputs["candidate_labels"],
            threshold=threshold,
            median_filter_frames=median_filter_frames,
            min_gap_seconds=min_gap_seconds,
            min_duration_seconds=min_duration_seconds,
            frame_mask=model_outputs["frame_mask"],
            score_reduction=score_reduction,
        )[0]


__all__ = ["MGAClapZeroShotAudioEventDetectionPipeline", "TASK"]
