"""The Inference Endpoints handler, in process: every input form and task, and malformed requests.

The handler runs the package's own layers (audio input, embedding API, windowed event detection), so its answers
are compared with those layers called directly. The handler loaded from a published repository without the package
is tested in `hub/test_publish.py`.
"""

import base64
import functools
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoTokenizer

from transformers_mgaclap import (
    MGAClapFeatureExtractor,
    MGAClapProcessor,
    detect_sound_events,
    endpoint_handler,
)
from transformers_mgaclap.endpoint_handler import MGAClapEndpointHandler

from conftest import record_decoding, silent_flac, tiny_model, without_length

RATE = 32000
LABELS = ["dog barking", "rain", "car engine"]
CAPTIONS = ["a dog barks", "rain falls on a roof", "a car engine idles"]


def waveform(seconds: float, rate: int = RATE, frequency: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.05
    return (0.4 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)


def encode(audio: np.ndarray, rate: int, file_format: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_text_model_dir):
    folder = tmp_path_factory.mktemp("served") / "mgaclap_tiny"
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir)
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"model": model, "processor": processor, "handler": MGAClapEndpointHandler(str(folder))}


AUDIO = waveform(3.0)
AUDIO_16K = waveform(2.0, rate=16000, frequency=300.0, seed=1)
WAV = encode(AUDIO, RATE, "WAV", "FLOAT")
FLAC = encode(AUDIO, RATE, "FLAC", "PCM_16")
# form -> (request inputs, extra parameters, the same audio as an array, its rate)
INPUT_FORMS = {
    "wav_bytes": (WAV, {}, AUDIO, RATE),
    "flac_bytes": (FLAC, {}, sf.read(io.BytesIO(FLAC), dtype="float32")[0], RATE),
    "ogg_bytes": (encode(AUDIO, RATE, "OGG", "VORBIS"), {}, None, RATE),
    "mp3_bytes": (encode(AUDIO, RATE, "MP3", "MPEG_LAYER_III"), {}, None, RATE),
    "base64_wav": (base64.b64encode(WAV).decode(), {}, AUDIO, RATE),
    "data_uri_flac": ("data:audio/flac;base64," + base64.b64encode(FLAC).decode(), {}, None, RATE),
    "float_list_16k": (AUDIO_16K.tolist(), {"sampling_rate": 16000}, AUDIO_16K, 16000),
    "float_list_default_rate": (AUDIO.tolist(), {}, AUDIO, RATE),
}


def as_audio(form: str):
    """What the package's own functions take for a request's audio: the file bytes, or the array and its rate."""
    inputs, parameters, _, rate = INPUT_FORMS[form]
    if isinstance(inputs, str):
        return base64.b64decode(inputs.split(",")[-1]), None
    if isinstance(inputs, bytes):
        return inputs, None
    return np.asarray(inputs, dtype=np.float32), parameters.get("sampling_rate", RATE)


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_classification_is_the_models_softmax(served, form):
    inputs, parameters, array, rate = INPUT_FORMS[form]
    result = served["handler"]({"inputs": inputs, "parameters": {**parameters, "candidate_labels": LABELS}})
    json.dumps(result)
    assert sorted(entry["label"] for entry in result) == sorted(LABELS)
    scores = [entry["score"] for entry in result]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    if array is None:  # compressed forms decode slightly differently: checked against their own decode below
        return
    texts = [f"This is a sound of {label}." for label in LABELS]
    inputs = served["processor"](
        text=texts, audio=array, sampling_rate=rate, resample=True, return_tensors="pt"
    )
    with torch.no_grad():
        probabilities = served["model"](**inputs).logits_per_audio.softmax(-1)[0]
    expected = dict(zip(LABELS, probabilities.tolist(), strict=True))
    assert max(abs(entry["score"] - expected[entry["label"]]) for entry in result) < 1e-6


def test_hypothesis_template_and_comma_separated_labels(served):
    template = "{} can be heard"
    parameters = {"candidate_labels": ", ".join(LABELS), "hypothesis_template": template}
    result = served["handler"]({"inputs": WAV, "parameters": parameters})
    inputs = served["processor"](
        text=[template.format(label) for label in LABELS],
        audio=AUDIO,
        sampling_rate=RATE,
        return_tensors="pt",
    )
    with torch.no_grad():
        probabilities = served["model"](**inputs).logits_per_audio.softmax(-1)[0].tolist()
    assert {e["label"]: e["score"] for e in result} == pytest.approx(
        dict(zip(LABELS, probabilities, strict=True)), abs=1e-6
    )


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_audio_embedding(served, form):
    inputs, parameters, _, _ = INPUT_FORMS[form]
    result = served["handler"]({"inputs": inputs, "parameters": {**parameters, "task": "audio-embedding"}})
    assert isinstance(result, list) and all(isinstance(value, float) for value in result)
    audio, rate = as_audio(form)
    from transformers_mgaclap import load_audio

    array, rate = load_audio(audio, rate, target_rate=RATE)
    features = served["processor"](audio=array, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        expected = served["model"].get_audio_features(**features).pooler_output[0]
    assert len(result) == served["model"].config.projection_dim
    np.testing.assert_allclose(result, expected.numpy(), atol=1e-6)


def test_float_lists_are_resampled_from_their_rate(served):
    handler = served["handler"]
    at_16k = handler(
        {"inputs": AUDIO_16K.tolist(), "parameters": {"task": "audio-embedding", "sampling_rate": 16000}}
    )
    as_32k = handler({"inputs": AUDIO_16K.tolist(), "parameters": {"task": "audio-embedding"}})
    assert np.abs(np.subtract(at_16k, as_32k)).max() > 1e-4  # the rate is honoured, not ignored


def test_text_embedding(served):
    handler, model, processor = served["handler"], served["model"], served["processor"]
    single = handler({"inputs": CAPTIONS[0], "parameters": {"task": "text-embedding"}})
    batch = handler({"inputs": CAPTIONS, "parameters": {"task": "text-embedding"}})
    json.dumps(batch)
    with torch.no_grad():
        expected = model.get_text_features(**processor(text=CAPTIONS, return_tensors="pt")).pooler_output
    np.testing.assert_allclose(batch, expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(single, expected[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_event_detection_is_the_windowed_path(served, form):
    inputs, parameters, _, _ = INPUT_FORMS[form]
    audio, rate = as_audio(form)
    options = {"median_filter_frames": 3, "min_gap_seconds": 0.5, "min_duration_seconds": 0.0}
    every_frame = detect_sound_events(
        served["model"],
        audio,
        LABELS,
        served["processor"],
        sampling_rate=rate,
        threshold=-1.0,
        progress=False,
    )
    threshold = float(np.median([event["score"] for event in every_frame]))  # some frames above, some below
    expected = detect_sound_events(
        served["model"], audio, LABELS, served["processor"], sampling_rate=rate, threshold=threshold,
        progress=False, **options,
    )  # fmt: skip
    request = {
        "inputs": inputs,
        "parameters": {**parameters, **options, "threshold": threshold, "task": "event-detection",
                       "candidate_labels": LABELS},
    }  # fmt: skip
    result = served["handler"](request)
    json.dumps(result)
    assert expected and result == expected


AUDIO_LIST = AUDIO[:3200].tolist()
CLASSIFY = {"candidate_labels": LABELS}
BAD_REQUESTS = {
    "body_not_a_dict": ["inputs"],
    "no_inputs": {"parameters": CLASSIFY},
    "inputs_none": {"inputs": None, "parameters": CLASSIFY},
    "parameters_not_a_dict": {"inputs": WAV, "parameters": ["task"]},
    "no_task_no_labels": {"inputs": WAV},
    "unknown_task": {"inputs": WAV, "parameters": {"task": "speech-recognition"}},
    "undecodable_bytes": {"inputs": b"definitely not an audio file" * 10, "parameters": CLASSIFY},
    "empty_bytes": {"inputs": b"", "parameters": CLASSIFY},
    "bad_base64": {"inputs": "this is not base64 !!!", "parameters": CLASSIFY},
    "base64_of_garbage": {"inputs": base64.b64encode(b"garbage bytes" * 20).decode(), "parameters": CLASSIFY},
    "empty_string": {"inputs": "", "parameters": CLASSIFY},
    "empty_audio_list": {"inputs": [], "parameters": CLASSIFY},
    "empty_wav": {"inputs": encode(np.zeros(0, np.float32), RATE, "WAV", "FLOAT"), "parameters": CLASSIFY},
    "nan_samples": {"inputs": [0.1, float("nan"), 0.2] * 100, "parameters": CLASSIFY},
    "inf_samples": {"inputs": [0.1, float("inf")] * 100, "parameters": CLASSIFY},
    "nested_list": {"inputs": [AUDIO_LIST, AUDIO_LIST], "parameters": CLASSIFY},
    "ragged_list": {"inputs": [[0.1, 0.2], [0.3]], "parameters": CLASSIFY},
    "strings_as_samples": {"inputs": ["a", "b"], "parameters": {"task": "audio-embedding"}},
    "booleans_as_samples": {"inputs": [True, False], "parameters": {"task": "audio-embedding"}},
    "inputs_wrong_type": {"inputs": 42, "parameters": CLASSIFY},
    "inputs_dict": {"inputs": {"array": AUDIO_LIST}, "parameters": CLASSIFY},
    "bad_sampling_rate": {"inputs": AUDIO_LIST, "parameters": {**CLASSIFY, "sampling_rate": "fast"}},
    "negative_sampling_rate": {"inputs": AUDIO_LIST, "parameters": {**CLASSIFY, "sampling_rate": -16000}},
    "empty_labels": {"inputs": WAV, "parameters": {"candidate_labels": []}},
    "empty_label_string": {"inputs": WAV, "parameters": {"candidate_labels": ["dog", " "]}},
    "labels_wrong_type": {"inputs": WAV, "parameters": {"candidate_labels": 3}},
    "duplicate_labels": {"inputs": WAV, "parameters": {"candidate_labels": ["dog", "dog"]}},
    "template_without_slot": {"inputs": WAV, "parameters": {**CLASSIFY, "hypothesis_template": "a sound"}},
    "detection_without_labels": {"inputs": WAV, "parameters": {"task": "event-detection"}},
    "threshold_not_a_number": {
        "inputs": WAV,
        "parameters": {**CLASSIFY, "task": "event-detection", "threshold": "high"},
    },
    "even_median_window": {
        "inputs": WAV,
        "parameters": {**CLASSIFY, "task": "event-detection", "median_filter_frames": 4},
    },
    "text_embedding_of_bytes": {"inputs": WAV, "parameters": {"task": "text-embedding"}},
    "text_embedding_empty_text": {"inputs": ["a dog", ""], "parameters": {"task": "text-embedding"}},
    "text_embedding_empty_list": {"inputs": [], "parameters": {"task": "text-embedding"}},
}


@pytest.mark.parametrize("kind", sorted(BAD_REQUESTS))
def test_bad_requests_get_a_400(served, kind):
    result = served["handler"](BAD_REQUESTS[kind])
    assert isinstance(result, dict) and result["status_code"] == 400, result
    assert isinstance(result["error"], str) and result["error"]
    json.dumps(result)


def test_overlong_audio_gets_a_413(served):
    request = {
        "inputs": np.zeros(601 * 1000, np.float32),
        "parameters": {"task": "audio-embedding", "sampling_rate": 1000},
    }
    result = served["handler"](request)
    assert result["status_code"] == 413 and "600 s" in result["error"]


def test_internal_failures_get_a_500(served, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(served["handler"].model, "get_audio_features", broken)
    result = served["handler"]({"inputs": WAV, "parameters": {"task": "audio-embedding"}})
    assert result == {"error": "Internal error: RuntimeError: out of memory", "status_code": 500}


# ---------------------------------------------------------------------------------------------------------------
# Hostile or careless requests: refused with a clear 400 / 413 before the work they would cause, never a 500
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def decoding(monkeypatch):
    return record_decoding(monkeypatch)


@pytest.fixture
def text_batches(served, monkeypatch):
    """The number of texts of every call to the model's text tower."""
    batches = []
    embed = served["model"].get_text_features

    @functools.wraps(embed)  # the embedding API reads the signature to pick the inputs
    def recorded(input_ids, *args, **kwargs):
        batches.append(len(input_ids))
        return embed(input_ids, *args, **kwargs)

    monkeypatch.setattr(served["handler"].model, "get_text_features", recorded)
    return batches


INT16 = np.round(AUDIO * 32767).astype(np.int16)
DETECT = {**CLASSIFY, "task": "event-detection"}
MANY_LABELS = [f"label {index}" for index in range(1001)]
REFUSED = {  # kind -> (request, status, what the error says)
    "two_hours_declared": (
        {"inputs": base64.b64encode(silent_flac(7200, 1000)).decode(), "parameters": CLASSIFY},
        413,
        "longer than the 600 s accepted",
    ),
    "wav_claiming_10_mhz": (
        {"inputs": encode(np.zeros(2000, np.float32), 10_000_000, "WAV", "PCM_16"), "parameters": CLASSIFY},
        400,
        "sampled at 10000000 Hz; accepted rates are 1000 to 384000 Hz",
    ),
    "nine_channels": (
        {"inputs": encode(np.zeros((1000, 9), np.float32), RATE, "WAV", "PCM_16"), "parameters": CLASSIFY},
        400,
        "has 9 channels; at most 8",
    ),
    "list_rate_out_of_range": (
        {"inputs": AUDIO_LIST, "parameters": {**CLASSIFY, "sampling_rate": 500}},
        400,
        "accepted rates are 1000 to 384000 Hz",
    ),
    "template_with_two_slots": (
        {"inputs": WAV, "parameters": {**CLASSIFY, "hypothesis_template": "{} and {}"}},
        400,
        "`hypothesis_template` must be a string containing `{}` exactly once",
    ),
    "template_too_long": (
        {"inputs": WAV, "parameters": {**CLASSIFY, "hypothesis_template": "{}" + "!" * 500}},
        400,
        '"hypothesis_template" is 502 characters long; at most 500',
    ),
    "too_many_labels": (
        {"inputs": WAV, "parameters": {"candidate_labels": MANY_LABELS}},
        400,
        "Got 1001 candidate labels; at most 1000 are accepted.",
    ),
    "too_many_labels_for_detection": (
        {"inputs": WAV, "parameters": {**DETECT, "candidate_labels": MANY_LABELS}},
        400,
        "Got 1001 candidate labels; at most 1000 are accepted.",
    ),
    "label_too_long": (
        {"inputs": WAV, "parameters": {"candidate_labels": ["dog", "x" * 501]}},
        400,
        "Candidate label 1 is 501 characters long; at most 500",
    ),
    "too_many_texts": (
        {"inputs": MANY_LABELS, "parameters": {"task": "text-embedding"}},
        400,
        "Got 1001 texts; at most 1000 are accepted.",
    ),
    "int16_taken_for_floats": (
        {"inputs": INT16.tolist(), "parameters": CLASSIFY},
        400,
        f"must be floats in [-1, 1], got a sample of magnitude {np.abs(INT16.astype(int)).max()}.",
    ),
    "floats_above_one": (
        {"inputs": (AUDIO * 3).tolist(), "parameters": CLASSIFY},
        400,
        'For 16-bit integer PCM pass "sample_format": "int16"',
    ),
    "unknown_sample_format": (
        {"inputs": INT16.tolist(), "parameters": {**CLASSIFY, "sample_format": "int24"}},
        400,
        "\"sample_format\" must be one of ['float32', 'int16'], got 'int24'.",
    ),
    "int16_fractions": (
        {"inputs": [0.5, 1.0] * 100, "parameters": {**CLASSIFY, "sample_format": "int16"}},
        400,
        'With "sample_format": "int16" every sample must be an integer.',
    ),
    "int16_out_of_range": (
        {"inputs": [40000, 0] * 100, "parameters": {**CLASSIFY, "sample_format": "int16"}},
        400,
        "samples must lie in [-32768, 32767], got values from 0 to 40000",
    ),
    "nan_threshold": (
        {"inputs": WAV, "parameters": {**DETECT, "threshold": float("nan")}},
        400,
        "`threshold` must be a finite number, got nan.",
    ),
    "bad_score_reduction": (
        {"inputs": WAV, "parameters": {**DETECT, "score_reduction": "median"}},
        400,
        "`score_reduction` must be 'max' or 'mean', got 'median'.",
    ),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_hostile_requests_are_refused_before_decoding_or_embedding(served, decoding, text_batches, kind):
    request, status, message = REFUSED[kind]
    result = served["handler"](request)
    assert result["status_code"] == status and message in result["error"], result
    assert decoding == [] and text_batches == []


def test_a_stream_without_a_declared_length_stops_at_the_limit(served, decoding):
    request = {"inputs": without_length(silent_flac(7200, 1000)), "parameters": CLASSIFY}
    result = served["handler"](request)
    assert result == {"error": "The audio is longer than the 600 s accepted.", "status_code": 413}
    assert decoding == [("count", 600 * 1000, 1)]  # one seek past the limit; the two hours are never decoded


@pytest.mark.parametrize("form", ["bytes", "base64"])
def test_files_over_the_request_size_are_refused_before_decoding(served, decoding, monkeypatch, form):
    monkeypatch.setattr(endpoint_handler, "MAX_REQUEST_BYTES", len(WAV) - 1)
    inputs = WAV if form == "bytes" else base64.b64encode(WAV).decode()
    result = served["handler"]({"inputs": inputs, "parameters": CLASSIFY})
    assert result["status_code"] == 413 and "MiB are accepted" in result["error"], result
    assert decoding == []
    monkeypatch.setattr(endpoint_handler, "MAX_REQUEST_BYTES", len(WAV))
    assert isinstance(served["handler"]({"inputs": inputs, "parameters": CLASSIFY}), list)


def test_template_braces_are_literal_text(served):
    template = "{{}}{0:>10000000}"  # `str.format` would pad each query to ten million characters
    result = served["handler"]({"inputs": WAV, "parameters": {**CLASSIFY, "hypothesis_template": template}})
    texts = ["{" + label + "}{0:>10000000}" for label in LABELS]
    inputs = served["processor"](text=texts, audio=AUDIO, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        probabilities = served["model"](**inputs).logits_per_audio.softmax(-1)[0].tolist()
    assert {e["label"]: e["score"] for e in result} == pytest.approx(
        dict(zip(LABELS, probabilities, strict=True)), abs=1e-6
    )


def test_int16_samples_with_their_format(served):
    declared = served["handler"](
        {"inputs": INT16.tolist(), "parameters": {**CLASSIFY, "sample_format": "int16"}}
    )
    as_floats = served["handler"]({"inputs": (INT16 / 32768).tolist(), "parameters": CLASSIFY})
    assert declared == as_floats and len(declared) == len(LABELS)


def test_labels_are_embedded_in_bounded_batches(served, text_batches):
    labels = MANY_LABELS[:1000]
    result = served["handler"]({"inputs": WAV, "parameters": {"candidate_labels": labels}})
    assert len(result) == 1000
    assert text_batches == [256, 256, 256, 232]


def test_event_detection_reads_one_window_at_a_time(served, decoding):
    recording = encode(waveform(25.0, rate=8000), 8000, "FLAC", "PCM_16")
    request = {"inputs": recording, "parameters": {**DETECT, "threshold": -1.0}}
    events = served["handler"](request)
    # Every frame is active: one event per label, to the end.
    assert {event["offset"] for event in events} == {25.0}
    assert [length for _, _, length in decoding] == [10 * 8000] * 4  # windows at 0, 5, 10 and 15 s


def test_event_offsets_end_at_the_end_of_a_3_s_clip(served):
    events = served["handler"]({"inputs": WAV, "parameters": {**DETECT, "threshold": -1.0}})
    assert sorted(event["label"] for event in events) == sorted(LABELS)
    assert all(event["onset"] == 0.0 and event["offset"] == 3.0 for event in events), events


@pytest.mark.parametrize(
    "parameters",
    [
        {"candidate_labels": ["dog", "dog"]},
        {"candidate_labels": ["dog", 3]},
        {"hypothesis_template": "a sound"},
        {"threshold": float("nan")},
        {"threshold": "high"},
        {"median_filter_frames": 4},
        {"min_gap_seconds": -1},
        {"score_reduction": "median"},
    ],
)
def test_the_same_refusals_as_the_pipeline(served, parameters):
    """The handler and the pipeline run the same checks: the handler's 400 says what the pipeline raises."""
    from transformers import pipeline

    detector = pipeline(
        "zero-shot-audio-event-detection",
        model=served["model"],
        feature_extractor=served["processor"].feature_extractor,
        tokenizer=served["processor"].tokenizer,
    )
    kwargs = {"candidate_labels": LABELS, **parameters}
    with pytest.raises(ValueError) as raised:
        detector(AUDIO, **kwargs)
    result = served["handler"]({"inputs": WAV, "parameters": {"task": "event-detection", **kwargs}})
    assert result == {"error": str(raised.value), "status_code": 400}
