"""Hugging Face Inference Endpoints custom handler for MGA-CLAP.

[`push_model_to_hub`] copies this file into the model repository as `handler.py`; the endpoint imports it from
there, next to the weights and the remote code, so it imports only the standard library, numpy, torch,
transformers and (optionally) soundfile: never `transformers_mgaclap` itself.

Request body: `{"inputs": ..., "parameters": {...}}`.

| `parameters["task"]` | `inputs` | answer |
|---|---|---|
| `"zero-shot-classification"` (default when `candidate_labels` is given) | audio | `[{"label", "score"}, ...]`, softmax over the labels, best first |
| `"audio-embedding"` | audio | normalised clip embedding, `list[float]` |
| `"text-embedding"` | a string or a list of strings | normalised embedding(s), `list[float]` or `list[list[float]]` |
| `"event-detection"` | audio | `[{"label", "onset", "offset", "score"}, ...]`, seconds, sorted by onset |

Audio is the raw bytes of an audio file (WAV, FLAC, OGG, MP3, ... : decoded with soundfile, else with the `ffmpeg`
command-line tool), the same bytes base64-encoded in a string (a `data:...;base64,` prefix is allowed), or a flat
list of floats in [-1, 1] at `parameters["sampling_rate"]` (default 32000). Everything is resampled to the
model's rate (32 kHz) and brought to 10 s (padded or cropped from the start) by the feature extractor.

Other parameters: `candidate_labels` (list of strings, or one comma-separated string), `hypothesis_template`
(must contain `{}`; default `"This is a sound of {}."` for classification as transformers' zero-shot pipeline,
`"{}"` for event detection as the official SED scripts), and for event detection `threshold` (default 0.5, on raw
frame-text cosines: tune it per checkpoint), `median_filter_frames` (3), `min_gap_seconds` (0.5) and
`min_duration_seconds` (0).

Invalid requests never raise: they answer `{"error": "<reason>", "status_code": 400}` (413 for audio longer than
`MAX_AUDIO_SECONDS`); an unexpected failure answers the same payload with status 500. A request without `task` and
without `candidate_labels` is refused rather than guessed (a string could be text or base64 audio).

Example:

```python
>>> handler = EndpointHandler("path/to/mgaclap")
>>> handler({"inputs": wav_bytes, "parameters": {"candidate_labels": ["dog barking", "rain"]}})
[{'label': 'dog barking', 'score': 0.93}, {'label': 'rain', 'score': 0.07}]
```
"""

import base64
import binascii
import io
import math
import numbers
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

try:  # optional: without it every file goes through ffmpeg
    import soundfile
except ImportError:  # pragma: no cover - depends on the endpoint image
    soundfile = None

ZERO_SHOT_CLASSIFICATION = "zero-shot-classification"
AUDIO_EMBEDDING = "audio-embedding"
TEXT_EMBEDDING = "text-embedding"
EVENT_DETECTION = "event-detection"
TASKS = (ZERO_SHOT_CLASSIFICATION, AUDIO_EMBEDDING, TEXT_EMBEDDING, EVENT_DETECTION)

DEFAULT_SAMPLING_RATE = 32000
CLASSIFICATION_TEMPLATE = "This is a sound of {}."  # transformers' zero-shot-audio-classification default
DETECTION_TEMPLATE = "{}"  # the official SED / grounding scripts embed the class name or phrase as is
DEFAULT_THRESHOLD = 0.5
MAX_AUDIO_SECONDS = 600  # a bound on what one request may decode and resample


class HandlerError(Exception):
    """A request the handler refuses; becomes `{"error": message, "status_code": status_code}`."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


def error_payload(message: str, status_code: int = 400) -> dict:
    return {"error": message, "status_code": status_code}


class EndpointHandler:
    """Serves an MGA-CLAP repository on Inference Endpoints (see the module docstring for the request format).

    Args:
        path (`str`, *optional*, defaults to `""`): the repository folder (the endpoint passes it; `""` is the
            working directory).
    """

    def __init__(self, path: str = ""):
        path = path or "."
        self.model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        self.sampling_rate = int(self.processor.feature_extractor.sampling_rate)

    def __call__(self, data: dict) -> list | dict:
        """Answer one request; invalid requests give an error payload instead of raising."""
        try:
            return self._handle(data)
        except HandlerError as error:
            return error_payload(error.message, error.status_code)
        except (ValueError, TypeError) as error:  # refused by the processor / feature extractor
            return error_payload(str(error) or type(error).__name__, 400)
        except Exception as error:  # noqa: BLE001 - an endpoint must answer, not crash
            return error_payload(f"Internal error: {type(error).__name__}: {error}", 500)

    # -- request parsing -------------------------------------------------------------------------------------

    def _handle(self, data: Any) -> list | dict:
        if not isinstance(data, dict):
            raise HandlerError(f"The request body must be a JSON object, got {type(data).__name__}.")
        if data.get("inputs") is None:
            raise HandlerError('The request has no "inputs".')
        parameters = data.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise HandlerError(f'"parameters" must be an object, got {type(parameters).__name__}.')
        inputs = data["inputs"]

        task = parameters.get("task")
        if task is None:
            if parameters.get("candidate_labels") is None:
                raise HandlerError(
                    f'Pass "candidate_labels" for zero-shot classification or choose "task" among {list(TASKS)}.'
                )
            task = ZERO_SHOT_CLASSIFICATION
        if task not in TASKS:
            raise HandlerError(f"Unknown task {task!r}; expected one of {list(TASKS)}.")

        with torch.inference_mode():
            if task == TEXT_EMBEDDING:
                return self._text_embedding(inputs)
            waveform, sampling_rate = self._load_audio(inputs, parameters)
            if task == AUDIO_EMBEDDING:
                return self._audio_embedding(waveform, sampling_rate)
            labels = _candidate_labels(parameters)
            default_template = (
                CLASSIFICATION_TEMPLATE if task == ZERO_SHOT_CLASSIFICATION else DETECTION_TEMPLATE
            )
            template = parameters.get("hypothesis_template", default_template)
            if not isinstance(template, str) or "{}" not in template:
                raise HandlerError(
                    f'"hypothesis_template" must be a string containing "{{}}", got {template!r}.'
                )
            texts = [template.format(label) for label in labels]
            if task == ZERO_SHOT_CLASSIFICATION:
                return self._classify(waveform, sampling_rate, labels, texts)
            return self._detect(waveform, sampling_rate, labels, texts, parameters)

    def _load_audio(self, inputs: Any, parameters: dict) -> tuple[np.ndarray, int]:
        """Any accepted audio form -> a finite, non-empty float32 mono waveform and its sampling rate."""
        if isinstance(inputs, (bytes, bytearray, memoryview)):
            waveform, rate = decode_audio_bytes(bytes(inputs), self.sampling_rate)
        elif isinstance(inputs, str):
            waveform, rate = decode_audio_bytes(decode_base64(inputs), self.sampling_rate)
        elif isinstance(inputs, (list, tuple, np.ndarray, torch.Tensor)):
            waveform = _float_waveform(inputs)
            rate = parameters.get("sampling_rate", DEFAULT_SAMPLING_RATE)
            if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or not 1000 <= rate <= 384000:
                raise HandlerError(f'"sampling_rate" must be an integer in [1000, 384000] Hz, got {rate!r}.')
            rate = int(rate)
        else:
            raise HandlerError(
                f'"inputs" must be audio bytes, a base64 string or a list of floats, got {type(inputs).__name__}.'
            )
        if waveform.size == 0:
            raise HandlerError("The audio is empty (0 samples).")
        if waveform.size > MAX_AUDIO_SECONDS * rate:
            raise HandlerError(f"The audio is longer than {MAX_AUDIO_SECONDS} s.", 413)
        if not np.isfinite(waveform).all():
            raise HandlerError("The audio contains NaN or infinite values.")
        return waveform, rate

    # -- tasks -------------------------------------------------------------------------------------------------

    def _audio_inputs(self, waveform: np.ndarray, sampling_rate: int, texts: list[str] | None = None) -> dict:
        return self.processor(
            text=texts, audio=waveform, sampling_rate=sampling_rate, resample=True, return_tensors="pt"
        )

    def _audio_embedding(self, waveform: np.ndarray, sampling_rate: int) -> list[float]:
        inputs = self._audio_inputs(waveform, sampling_rate)
        embeds = self.model.get_audio_features(inputs["input_features"], inputs.get("input_features_mask"))
        return embeds.pooler_output[0].float().tolist()

    def _text_embedding(self, inputs: Any) -> list:
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, (list, tuple)) or not texts:
            raise HandlerError(
                'For "text-embedding", "inputs" must be a string or a non-empty list of strings.'
            )
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise HandlerError(f"Every text must be a non-empty string, got {text!r}.")
        encoded = self.processor(text=list(texts), return_tensors="pt")
        embeds = self.model.get_text_features(
            encoded["input_ids"], encoded.get("attention_mask"), encoded.get("token_type_ids")
        ).pooler_output.float()
        return embeds[0].tolist() if single else embeds.tolist()

    def _classify(
        self, waveform: np.ndarray, sampling_rate: int, labels: list[str], texts: list[str]
    ) -> list:
        outputs = self.model(**self._audio_inputs(waveform, sampling_rate, texts))
        scores = outputs.logits_per_audio[0].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]

    def _detect(
        self, waveform: np.ndarray, sampling_rate: int, labels: list[str], texts: list[str], parameters: dict
    ) -> list:
        options = {
            "threshold": _number(parameters, "threshold", DEFAULT_THRESHOLD),
            "median_filter_frames": int(
                _number(parameters, "median_filter_frames", 3, integer=True, minimum=0)
            ),
            "min_gap_seconds": _number(parameters, "min_gap_seconds", 0.5, minimum=0.0),
            "min_duration_seconds": _number(parameters, "min_duration_seconds", 0.0, minimum=0.0),
        }
        if options["median_filter_frames"] > 1 and options["median_filter_frames"] % 2 == 0:
            raise HandlerError('"median_filter_frames" must be odd (or 0/1 for no filter).')
        frames = self.model.get_frame_text_similarity(**self._audio_inputs(waveform, sampling_rate, texts))
        if hasattr(self.processor, "post_process_sound_event_detection"):
            events = self.processor.post_process_sound_event_detection(
                frames.frame_similarity,
                frames.frame_boundaries,
                labels,
                frame_mask=frames.frame_mask,
                **options,
            )[0]
        else:  # an older processor: plain thresholding and gap merging
            events = threshold_events(
                frames.frame_similarity[0],
                frames.frame_boundaries,
                labels,
                options["threshold"],
                options["min_gap_seconds"],
                options["min_duration_seconds"],
                None if frames.frame_mask is None else frames.frame_mask[0],
            )
        return [
            {
                "label": event["label"],
                "onset": float(event["onset"]),
                "offset": float(event["offset"]),
                "score": float(event["score"]),
            }
            for event in events
        ]


# -- helpers ---------------------------------------------------------------------------------------------------


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


def decode_audio_bytes(payload: bytes, sampling_rate: int) -> tuple[np.ndarray, int]:
    """Decode an audio file's bytes to a float32 mono waveform.

    soundfile (libsndfile: WAV, FLAC, OGG, MP3, ...) is tried first and keeps the file's own rate; anything it cannot
    read goes through transformers' `ffmpeg_read`, which returns audio already at `sampling_rate`.
    """
    if not payload:
        raise HandlerError("The audio payload is empty (0 bytes).")
    if soundfile is not None:
        try:
            data, rate = soundfile.read(io.BytesIO(payload), dtype="float32", always_2d=True)
            return data.mean(axis=1).astype(np.float32), int(rate)
        except Exception:  # noqa: BLE001 - not a format libsndfile knows: try ffmpeg
            pass
    try:
        from transformers.pipelines.audio_utils import ffmpeg_read

        return ffmpeg_read(payload, sampling_rate), sampling_rate
    except Exception as error:  # noqa: BLE001
        raise HandlerError(f"Could not decode the audio bytes: {error}") from None


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


def threshold_events(
    scores: torch.Tensor,
    boundaries: torch.Tensor,
    labels: list[str],
    threshold: float,
    min_gap_seconds: float = 0.5,
    min_duration_seconds: float = 0.0,
    frame_mask: torch.Tensor | None = None,
) -> list[dict]:
    """Events from one clip's frame-by-query scores `(frames, queries)`: frames `>= threshold`, gaps of at most
    `min_gap_seconds` bridged, events shorter than `min_duration_seconds` dropped (no median filter)."""
    scores = scores.detach().cpu().float()
    edges = boundaries.detach().cpu().double().tolist()
    active = scores >= threshold
    if frame_mask is not None:
        active &= frame_mask.detach().cpu().bool().unsqueeze(-1)
    events = []
    for query, label in enumerate(labels):
        runs: list[list[int]] = []
        for frame in active[:, query].nonzero().flatten().tolist():
            if runs and edges[frame] - edges[runs[-1][1]] <= min_gap_seconds + 1e-9:
                runs[-1][1] = frame + 1
            else:
                runs.append([frame, frame + 1])
        for start, stop in runs:
            if edges[stop] - edges[start] < min_duration_seconds:
                continue
            score = float(scores[start:stop, query].max())
            events.append({"label": label, "onset": edges[start], "offset": edges[stop], "score": score})
    events.sort(key=lambda event: (event["onset"], labels.index(event["label"]), event["offset"]))
    return events


__all__ = ["EndpointHandler", "HandlerError", "decode_audio_bytes", "threshold_events"]
