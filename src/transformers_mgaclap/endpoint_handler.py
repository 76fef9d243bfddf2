"""Hugging Face Inference Endpoints handler for MGA-CLAP.

Published repositories carry this module as remote code, next to a small `handler.py` (written by
`transformers_mgaclap.hub`) that the endpoint imports and that loads this module from the repository itself, so the
endpoint runs the package's own audio input layer, embedding API and event decoder without installing the package.

Request body: `{"inputs": ..., "parameters": {...}}`.

| `parameters["task"]` | `inputs` | answer |
|---|---|---|
| `"zero-shot-classification"` (default when `candidate_labels` is given) | audio | `[{"label", "score"}, ...]`, softmax over the labels, best first |
| `"audio-embedding"` | audio | normalised clip embedding, `list[float]` |
| `"text-embedding"` | a string or a list of strings | normalised embedding(s), `list[float]` or `list[list[float]]` |
| `"event-detection"` | audio | `[{"label", "onset", "offset", "score"}, ...]`, seconds, sorted by onset |

Audio is the raw bytes of an audio file (WAV, FLAC, OGG, MP3, ...), the same bytes base64-encoded in a string (a
`data:...;base64,` prefix is allowed), or a flat list of samples at `parameters["sampling_rate"]` (default 32000):
floats in [-1, 1], or with `parameters["sample_format"] = "int16"` integers in [-32768, 32767] (16-bit PCM, scaled
by 1 / 32768). Clip-level tasks (classification, audio embedding) see the first 10 s, as the model does. Event
detection covers the whole recording, read window by window through the same windowed path as `detect_sound_events`
and the `zero-shot-audio-event-detection` pipeline, so all three give the same events.

Other parameters: `candidate_labels` (list of strings, or one comma-separated string; each label once),
`hypothesis_template` (must contain `{}` exactly once, where the label goes; other braces are literal text; default
`"This is a sound of {}."` for classification as transformers' zero-shot pipeline, `"{}"` for event detection as the
official SED scripts), and for event detection `threshold` (default 0.5, on raw frame-text cosines: tune it per
checkpoint), `median_filter_frames` (3), `min_gap_seconds` (0.5), `min_duration_seconds` (0) and `score_reduction`
(`"max"`), checked by the same functions, with the same messages, as the pipeline's.

Limits: one request is bounded before anything is decoded, so that its cost is set by these constants and not by
what its bytes claim. Audio files and base64 strings hold at most `MAX_REQUEST_BYTES` bytes of file; the rate, the
channels and the duration are read from the header and must lie within `SAMPLING_RATE_RANGE`, `MAX_CHANNELS` and
`MAX_AUDIO_SECONDS` (a stream without a declared duration is counted chunk by chunk, and the count stops at the
limit); audio is then decoded one window at a time. At most `MAX_TEXTS` labels (or texts to embed) of at most
`MAX_TEXT_CHARS` characters, and templates of at most `MAX_TEXT_CHARS` characters, are accepted; text is embedded
in batches.

Invalid requests never raise: they answer `{"error": "<reason>", "status_code": 400}` (413 for audio longer than
`MAX_AUDIO_SECONDS` or a file larger than `MAX_REQUEST_BYTES`); an unexpected failure answers the same payload with
status 500. A request without `task` and without `candidate_labels` is refused rather than guessed (a string could be
text or base64 audio).
"""

import base64
import binascii
import math
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from .audio_input import (
    AudioInputError,
    AudioLimits,
    AudioSource,
    AudioTooLongError,
    check_sampling_rate,
    open_audio,
)
from .embedding import embed_audio, embed_text, logit_scale
from .processing_mgaclap import check_labels, check_template, check_texts, format_queries
from .sound_event_detection import check_detection_options, detect_sound_events

ZERO_SHOT_CLASSIFICATION = "zero-shot-classification"
AUDIO_EMBEDDING = "audio-embedding"
TEXT_EMBEDDING = "text-embedding"
EVENT_DETECTION = "event-detection"
TASKS = (ZERO_SHOT_CLASSIFICATION, AUDIO_EMBEDDING, TEXT_EMBEDDING, EVENT_DETECTION)

DEFAULT_SAMPLING_RATE = 32000
CLASSIFICATION_TEMPLATE = "This is a sound of {}."  # transformers' zero-shot-audio-classification default
DETECTION_TEMPLATE = "{}"  # the official SED / grounding scripts embed the class name or phrase as is
# Event-detection parameters a request may set; window and hop stay at their defaults, since a short hop would
# multiply the windows one request embeds.
DETECTION_PARAMETERS = (
    "threshold",
    "median_filter_frames",
    "min_gap_seconds",
    "min_duration_seconds",
    "score_reduction",
)
# Sample lists: their formats and each one's full scale (None: floats in [-1, 1]).
SAMPLE_FORMATS = {"float32": None, "int16": 32768}

# The limits of one request (see the module docstring).
MAX_AUDIO_SECONDS = 600
SAMPLING_RATE_RANGE = (1000, 384000)
MAX_CHANNELS = 8
MAX_REQUEST_BYTES = 64 * 2**20
MAX_TEXTS = 1000
MAX_TEXT_CHARS = 500
AUDIO_LIMITS = AudioLimits(MAX_AUDIO_SECONDS, SAMPLING_RATE_RANGE, MAX_CHANNELS)


class HandlerError(Exception):
    """A request the handler refuses; becomes `{"error": message, "status_code": status_code}`."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def error_payload(message: str, status_code: int = 400) -> dict:
    return {"error": message, "status_code": status_code}


class MGAClapEndpointHandler:
    """Serves an MGA-CLAP repository (see the module docstring for the request format and the limits).

    Args:
        path (`str`): the repository folder.
    """

    def __init__(self, path: str):
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        self.sampling_rate = int(self.processor.feature_extractor.sampling_rate)

    def __call__(self, data: dict) -> list | dict:
        """Answer one request; invalid requests give an error payload instead of raising."""
        try:
            with torch.inference_mode():
                return self._handle(data)
        except HandlerError as error:
            return error_payload(error.message, error.status_code)
        except AudioTooLongError as error:
            return error_payload(str(error), 413)
        # Refused by the audio layer, the checks shared with the pipeline, or the feature extractor.
        except (ValueError, TypeError) as error:
            return error_payload(str(error) or type(error).__name__, 400)
        except Exception as error:  # noqa: BLE001 - an endpoint must answer, not crash
            return error_payload(f"Internal error: {type(error).__name__}: {error}", 500)

    def _handle(self, data: Any) -> list | dict:
        # Every parameter is checked before the audio is opened: a refused request decodes nothing.
        inputs, parameters = _request(data)
        task = _task(parameters)
        if task == TEXT_EMBEDDING:
            return self._text_embedding(inputs)
        if task == AUDIO_EMBEDDING:
            with _open(inputs, parameters) as source:
                return self._audio_embedding(source)
        labels = _candidate_labels(parameters)
        if task == ZERO_SHOT_CLASSIFICATION:
            template = _template(parameters, CLASSIFICATION_TEMPLATE)
            with _open(inputs, parameters) as source:
                return self._classify(source, labels, template)
        template = _template(parameters, DETECTION_TEMPLATE)
        options = check_detection_options(
            max_window_seconds=self.processor.feature_extractor.max_length_s,
            **{name: parameters[name] for name in DETECTION_PARAMETERS if name in parameters},
        )
        with _open(inputs, parameters) as source:
            return self._detect(source, labels, template, options)

    def _clip(self, source: AudioSource) -> np.ndarray:
        """The first `max_length_s` seconds: all that the clip-level tasks look at."""
        window = int(math.ceil(self.processor.feature_extractor.max_length_s * source.sampling_rate))
        return source.read(0, window)

    def _audio_embedding(self, source: AudioSource) -> list[float]:
        clip = self._clip(source)
        embeds = embed_audio(self.model, self.processor, [clip], sampling_rate=source.sampling_rate)
        return embeds.clip_embeds[0].tolist()

    def _text_embedding(self, inputs: Any) -> list:
        if not isinstance(inputs, (str, list, tuple)):
            raise HandlerError(
                'For "text-embedding", "inputs" must be a string or a non-empty list of strings.'
            )
        texts = check_texts(inputs, MAX_TEXTS, MAX_TEXT_CHARS)
        embeds = embed_text(self.model, self.processor, texts, return_word_embeds=False).text_embeds
        return embeds[0].tolist() if isinstance(inputs, str) else embeds.tolist()

    def _classify(self, source: AudioSource, labels: list[str], template: str) -> list:
        clip = self._clip(source)
        audio = embed_audio(
            self.model, self.processor, [clip], sampling_rate=source.sampling_rate
        ).clip_embeds
        queries = format_queries(labels, template)
        text = embed_text(self.model, self.processor, queries, return_word_embeds=False).text_embeds
        scores = (logit_scale(self.model) * audio @ text.t())[0].softmax(dim=-1).tolist()
        ranked = sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]

    def _detect(self, source: AudioSource, labels: list[str], template: str, options: dict) -> list:
        events = detect_sound_events(
            self.model,
            source,
            labels,
            processor=self.processor,
            hypothesis_template=template,
            progress=False,
            **options,
        )
        return [{key: event[key] for key in ("label", "onset", "offset", "score")} for event in events]


# -- request parsing -----------------------------------------------------------------------------------------------


def _request(data: Any) -> tuple[Any, dict]:
    if not isinstance(data, dict):
        raise HandlerError(f"The request body must be a JSON object, got {type(data).__name__}.")
    if data.get("inputs") is None:
        raise HandlerError('The request has no "inputs".')
    parameters = data.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise HandlerError(f'"parameters" must be an object, got {type(parameters).__name__}.')
    return data["inputs"], parameters


def _task(parameters: dict) -> str:
    task = parameters.get("task")
    if task is None:
        if parameters.get("candidate_labels") is None:
            raise HandlerError(
                f'Pass "candidate_labels" for zero-shot classification or choose "task" among {list(TASKS)}.'
            )
        return ZERO_SHOT_CLASSIFICATION
    if task not in TASKS:
        raise HandlerError(f"Unknown task {task!r}; expected one of {list(TASKS)}.")
    return task


def _open(inputs: Any, parameters: dict) -> AbstractContextManager[AudioSource]:
    """The request's audio, opened within [`AUDIO_LIMITS`] (checked on the header, before decoding)."""
    audio, sampling_rate = _audio(inputs, parameters)
    return open_audio(audio, sampling_rate, name="The audio", limits=AUDIO_LIMITS)


def _audio(inputs: Any, parameters: dict) -> tuple[Any, int | None]:
    """`inputs` as something [`~audio_input.open_audio`] reads, and the rate of a sample list."""
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        _check_file_size(len(inputs))
        return bytes(inputs), None
    if isinstance(inputs, str):
        return decode_base64(inputs), None
    if isinstance(inputs, (list, tuple, np.ndarray, torch.Tensor)):
        rate = check_sampling_rate(parameters.get("sampling_rate", DEFAULT_SAMPLING_RATE))
        AUDIO_LIMITS.check_format("The audio", rate, 1)
        AUDIO_LIMITS.check_length("The audio", len(inputs), rate)  # before a long list is converted
        return _list_waveform(inputs, parameters.get("sample_format", "float32")), rate
    raise HandlerError(
        f'"inputs" must be audio bytes, a base64 string or a list of samples, got {type(inputs).__name__}.'
    )


def _check_file_size(num_bytes: int) -> None:
    if num_bytes > MAX_REQUEST_BYTES:
        raise HandlerError(
            f"The audio file is {num_bytes / 2**20:.1f} MiB; at most {MAX_REQUEST_BYTES / 2**20:g} MiB are accepted.",
            413,
        )


def decode_base64(text: str) -> bytes:
    """Base64 (standard or URL-safe alphabet, optional `data:<mime>;base64,` prefix) -> bytes, at most
    `MAX_REQUEST_BYTES` of them."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if not text:
        raise HandlerError('"inputs" is an empty string.')
    _check_file_size(len(text) * 3 // 4 - text[-2:].count("="))  # the decoded size, before decoding
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii"))
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as error:
        raise HandlerError(
            f'A string "inputs" must be base64-encoded audio bytes (for text use task "text-embedding"): {error}'
        ) from None


def _list_waveform(values: Any, sample_format: Any) -> np.ndarray:
    """A flat list / array of samples -> float32 in [-1, 1]; nested lists, strings, booleans and samples outside the
    format's range are refused (integer PCM taken for floats would be 32768 times too loud)."""
    if not isinstance(sample_format, str) or sample_format not in SAMPLE_FORMATS:
        raise HandlerError(f'"sample_format" must be one of {list(SAMPLE_FORMATS)}, got {sample_format!r}.')
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except ValueError as error:
        raise HandlerError(f"The audio list is not a flat list of numbers: {error}") from None
    if array.ndim != 1:
        raise HandlerError(
            f"Audio given as a list must be one flat mono list of samples, got shape {array.shape}."
        )
    if array.size and array.dtype.kind not in "fiu":
        raise HandlerError(f"Audio samples must be numbers, got {array.dtype} values.")
    full_scale = SAMPLE_FORMATS[sample_format]
    if full_scale is None:
        return _float_samples(array)
    return _integer_samples(array, sample_format, full_scale)


def _float_samples(array: np.ndarray) -> np.ndarray:
    samples = array.astype(np.float32)
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak > 1.0:  # NaN compares False here: the audio layer names it
        raise HandlerError(
            f"Audio samples must be floats in [-1, 1], got a sample of magnitude {peak:g}. For 16-bit integer PCM "
            'pass "sample_format": "int16" (or divide the samples by 32768).'
        )
    return samples


def _integer_samples(array: np.ndarray, sample_format: str, full_scale: int) -> np.ndarray:
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise HandlerError(f'With "sample_format": "{sample_format}" every sample must be an integer.')
    if array.size and (array.min() < -full_scale or array.max() > full_scale - 1):
        raise HandlerError(
            f'With "sample_format": "{sample_format}" samples must lie in [{-full_scale}, {full_scale - 1}], got '
            f"values from {array.min():g} to {array.max():g}."
        )
    return (array / full_scale).astype(np.float32)


def _candidate_labels(parameters: dict) -> list[str]:
    labels = parameters.get("candidate_labels")
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",")]
    return check_labels(labels, MAX_TEXTS, MAX_TEXT_CHARS)


def _template(parameters: dict, default: str) -> str:
    template = parameters.get("hypothesis_template", default)
    if isinstance(template, str) and len(template) > MAX_TEXT_CHARS:
        raise HandlerError(
            f'"hypothesis_template" is {len(template)} characters long; at most {MAX_TEXT_CHARS} are accepted.'
        )
    return check_template(template)


__all__ = [
    "AudioInputError",
    "HandlerError",
    "MGAClapEndpointHandler",
    "decode_base64",
]
