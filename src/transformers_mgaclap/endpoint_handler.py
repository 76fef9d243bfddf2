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
`data:...;base64,` prefix is allowed), or a flat list of floats in [-1, 1] at `parameters["sampling_rate"]` (default
32000). Clip-level tasks (classification, audio embedding) see the first 10 s, as the model does. Event detection
covers the whole recording, read window by window through the same windowed path as `detect_sound_events` and the
`zero-shot-audio-event-detection` pipeline, so all three give the same events.

Other parameters: `candidate_labels` (list of strings, or one comma-separated string), `hypothesis_template`
(must contain `{}`; default `"This is a sound of {}."` for classification as transformers' zero-shot pipeline,
`"{}"` for event detection as the official SED scripts), and for event detection `threshold` (default 0.5, on raw
frame-text cosines: tune it per checkpoint), `median_filter_frames` (3), `min_gap_seconds` (0.5) and
`min_duration_seconds` (0).

Invalid requests never raise: they answer `{"error": "<reason>", "status_code": 400}` (413 for audio longer than
`MAX_AUDIO_SECONDS`); an unexpected failure answers the same payload with status 500. A request without `task` and
without `candidate_labels` is refused rather than guessed (a string could be text or base64 audio).
"""

import base64
import binascii
import math
import numbers
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

from .audio_input import AudioInputError, AudioSource, open_audio
from .embedding import embed_audio, embed_text, logit_scale
from .processing_mgaclap import check_texts, format_queries
from .sound_event_detection import detect_sound_events

ZERO_SHOT_CLASSIFICATION = "zero-shot-classification"
AUDIO_EMBEDDING = "audio-embedding"
TEXT_EMBEDDING = "text-embedding"
EVENT_DETECTION = "event-detection"
TASKS = (ZERO_SHOT_CLASSIFICATION, AUDIO_EMBEDDING, TEXT_EMBEDDING, EVENT_DETECTION)

DEFAULT_SAMPLING_RATE = 32000
CLASSIFICATION_TEMPLATE = "This is a sound of {}."  # transformers' zero-shot-audio-classification default
DETECTION_TEMPLATE = "{}"  # the official SED / grounding scripts embed the class name or phrase as is
DEFAULT_THRESHOLD = 0.5
MAX_AUDIO_SECONDS = 600  # a bound on what one request may decode


class HandlerError(Exception):
    """A request the handler refuses; becomes `{"error": message, "status_code": status_code}`."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def error_payload(message: str, status_code: int = 400) -> dict:
    return {"error": message, "status_code": status_code}


class MGAClapEndpointHandler:
    """Serves an MGA-CLAP repository (see the module docstring for the request format).

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
        except (ValueError, TypeError) as error:  # refused by the audio layer, the processor or the extractor
            return error_payload(str(error) or type(error).__name__, 400)
        except Exception as error:  # noqa: BLE001 - an endpoint must answer, not crash
            return error_payload(f"Internal error: {type(error).__name__}: {error}", 500)

    def _handle(self, data: Any) -> list | dict:
        inputs, parameters = _request(data)
        task = _task(parameters)
        if task == TEXT_EMBEDDING:
            return self._text_embedding(inputs)
        with open_audio(*self._audio(inputs, parameters)) as source:
            if source.duration > MAX_AUDIO_SECONDS:
                raise HandlerError(f"The audio is longer than {MAX_AUDIO_SECONDS} s.", 413)
            if task == AUDIO_EMBEDDING:
                return self._audio_embedding(source)
            labels = _candidate_labels(parameters)
            default = CLASSIFICATION_TEMPLATE if task == ZERO_SHOT_CLASSIFICATION else DETECTION_TEMPLATE
            template = _template(parameters, default)
            if task == ZERO_SHOT_CLASSIFICATION:
                return self._classify(source, labels, template)
            return self._detect(source, labels, template, parameters)

    def _audio(self, inputs: Any, parameters: dict) -> tuple[Any, int | None]:
        """`inputs` as something [`~audio_input.open_audio`] reads, and the rate of a float list."""
        if isinstance(inputs, (bytes, bytearray, memoryview)):
            return bytes(inputs), None
        if isinstance(inputs, str):
            return decode_base64(inputs), None
        if isinstance(inputs, (list, tuple, np.ndarray, torch.Tensor)):
            rate = parameters.get("sampling_rate", DEFAULT_SAMPLING_RATE)
            if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or not 1000 <= rate <= 384000:
                raise HandlerError(f'"sampling_rate" must be an integer in [1000, 384000] Hz, got {rate!r}.')
            return _float_waveform(inputs), int(rate)
        raise HandlerError(
            f'"inputs" must be audio bytes, a base64 string or a list of floats, got {type(inputs).__name__}.'
        )

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
        embeds = embed_text(self.model, self.processor, check_texts(inputs)).text_embeds
        return embeds[0].tolist() if isinstance(inputs, str) else embeds.tolist()

    def _classify(self, source: AudioSource, labels: list[str], template: str) -> list:
        clip = self._clip(source)
        audio = embed_audio(
            self.model, self.processor, [clip], sampling_rate=source.sampling_rate
        ).clip_embeds
        text = embed_text(self.model, self.processor, format_queries(labels, template)).text_embeds
        scores = (logit_scale(self.model) * audio @ text.t())[0].softmax(dim=-1).tolist()
        ranked = sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]

    def _detect(self, source: AudioSource, labels: list[str], template: str, parameters: dict) -> list:
        median = int(_number(parameters, "median_filter_frames", 3, integer=True, minimum=0))
        if median > 1 and median % 2 == 0:
            raise HandlerError('"median_filter_frames" must be odd (or 0/1 for no filter).')
        events = detect_sound_events(
            self.model,
            source,
            labels,
            processor=self.processor,
            hypothesis_template=template,
            threshold=_number(parameters, "threshold", DEFAULT_THRESHOLD),
            median_filter_frames=median,
            min_gap_seconds=_number(parameters, "min_gap_seconds", 0.5, minimum=0.0),
            min_duration_seconds=_number(parameters, "min_duration_seconds", 0.0, minimum=0.0),
            progress=False,
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


def decode_base64(text: str) -> bytes:
    """Base64 (standard or URL-safe alphabet, optional `data:<mime>;base64,` prefix) -> bytes."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if not text:
        raise HandlerError('"inputs" is an empty string.')
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text.encode("ascii"))
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as error:
        raise HandlerError(
            f'A string "inputs" must be base64-encoded audio bytes (for text use task "text-embedding"): {error}'
        ) from None


def _float_waveform(values: Any) -> np.ndarray:
    """A flat list / array of numbers -> float32 array; nested lists, strings and booleans are refused."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except ValueError as error:
        raise HandlerError(f"The audio list is not a flat list of numbers: {error}") from None
    if array.ndim != 1:
        raise HandlerError(
            f"Audio given as a list must be one flat mono list of floats, got shape {array.shape}."
        )
    if array.size and array.dtype.kind not in "fiu":
        raise HandlerError(f"Audio samples must be numbers, got {array.dtype} values.")
    return array.astype(np.float32)


def _candidate_labels(parameters: dict) -> list[str]:
    labels = parameters.get("candidate_labels")
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",")]
    if not isinstance(labels, (list, tuple)) or not labels:
        raise HandlerError('"candidate_labels" must be a non-empty list of strings.')
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise HandlerError(f"Every candidate label must be a non-empty string, got {label!r}.")
    if len(set(labels)) != len(labels):
        raise HandlerError('"candidate_labels" contains duplicates.')
    return list(labels)


def _template(parameters: dict, default: str) -> str:
    template = parameters.get("hypothesis_template", default)
    if not isinstance(template, str) or "{}" not in template:
        raise HandlerError(f'"hypothesis_template" must be a string containing "{{}}", got {template!r}.')
    return template


def _number(parameters: dict, name: str, default: float, integer: bool = False, minimum: float | None = None):
    value = parameters.get(name, default)
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if valid and integer:
        valid = float(value).is_integer()
    if not valid or (minimum is not None and value < minimum):
        kind = "an integer" if integer else "a finite number"
        bound = f" >= {minimum}" if minimum is not None else ""
        raise HandlerError(f'"{name}" must be {kind}{bound}, got {value!r}.')
    return value


__all__ = ["AudioInputError", "HandlerError", "MGAClapEndpointHandler", "decode_base64"]
