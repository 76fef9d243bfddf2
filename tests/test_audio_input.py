"""The audio input layer: every accepted form gives the same waveform, windows equal the whole, one kind of error."""

import io
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, Dataset

from transformers_mgaclap import audio_input
from transformers_mgaclap.audio_input import AudioInputError, load_audio, open_audio, resample

RATE = 44100


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    """(channels, samples) float32 noise, 7.3 s at 44.1 kHz."""
    return (np.random.default_rng(0).standard_normal((2, int(7.3 * RATE))) * 0.1).astype(np.float32)


def wav(audio: np.ndarray, rate: int = RATE, subtype: str = "FLOAT", file_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T if audio.ndim == 2 else audio, rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(params=["torchcodec", "soundfile"])
def backend(request, monkeypatch):
    """Both decoders of files: torchcodec where usable (the default here), soundfile otherwise."""
    if request.param == "soundfile":
        monkeypatch.setattr(audio_input, "is_torchcodec_usable", lambda decode: False)
    return request.param


def test_every_form_gives_the_same_mono_waveform(stereo, tmp_path, backend):
    mono = stereo.mean(axis=0)
    payload = wav(stereo)
    (tmp_path / "clip.wav").write_bytes(payload)
    cell = Dataset.from_dict({"audio": [{"bytes": payload, "path": "clip.wav"}]}).cast_column(
        "audio", Audio()
    )
    forms = {
        "array (channels, samples)": (stereo, RATE),
        "tensor": (torch.from_numpy(stereo), RATE),
        "list": (mono.tolist(), RATE),
        "path": (str(tmp_path / "clip.wav"), None),
        "Path": (tmp_path / "clip.wav", None),
        "bytes": (payload, None),
        "undecoded cell": ({"bytes": payload, "path": "clip.wav"}, None),
        "path-only cell": ({"bytes": None, "path": str(tmp_path / "clip.wav")}, None),
        "decoded cell (AudioDecoder)": (cell[0]["audio"], None),
        "legacy decoded cell": ({"array": mono, "sampling_rate": RATE}, None),
        "pipeline dict": ({"raw": mono, "sampling_rate": RATE}, None),
    }
    for name, (audio, rate) in forms.items():
        waveform, found_rate = load_audio(audio, rate)
        assert found_rate == RATE and waveform.dtype == np.float32, name
        np.testing.assert_allclose(waveform, mono, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("file_format, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS")])
def test_windows_equal_the_whole_recording(stereo, backend, file_format, subtype):
    payload = wav(stereo, subtype=subtype, file_format=file_format)
    with open_audio(payload) as source:
        whole = source.read(0, source.num_samples)
        assert source.num_samples == stereo.shape[1] and whole.shape == (stereo.shape[1],)
        for start, length in [(0, 1000), (1, 44100), (123457, 100000), (source.num_samples - 10, 1000)]:
            window = source.read(start, length)
            np.testing.assert_array_equal(window, whole[start : start + length])
        assert source.read(source.num_samples, 10).shape == (0,)


def test_resampling_is_the_packages_filter(stereo):
    waveform, rate = load_audio(wav(stereo), target_rate=32000)
    expected = resample(torch.from_numpy(stereo.mean(axis=0)), RATE, 32000).numpy()
    assert rate == 32000 and waveform.shape == expected.shape
    np.testing.assert_allclose(waveform, expected, atol=1e-6)


def test_default_rate_for_arrays_and_a_contradicting_rate_for_files(stereo):
    assert load_audio(stereo[0], default_rate=16000)[1] == 16000
    assert load_audio(stereo[0], 8000, default_rate=16000)[1] == 8000
    with pytest.raises(AudioInputError, match="pass its `sampling_rate`"):
        load_audio(stereo[0])
    with pytest.raises(AudioInputError, match="44100 Hz but `sampling_rate=16000`"):
        load_audio(wav(stereo), 16000)


def test_an_open_source_is_read_and_left_open(stereo):
    with open_audio(wav(stereo)) as source:
        with open_audio(source) as same:
            assert same is source
        assert source.read(0, 10).shape == (10,)  # still open


@pytest.mark.parametrize(
    "audio, rate, message",
    [
        (np.zeros(0, np.float32), RATE, "empty"),
        (np.array([1, 2, 3], np.int16), RATE, "int16"),
        (np.array([0.1, np.nan], np.float32), RATE, "NaN or infinite"),
        (np.zeros((100, 2), np.float32), RATE, "transpose"),
        (np.zeros((2, 2, 100), np.float32), RATE, "shape (2, 2, 100)"),
        ([[0.1, 0.2], [0.3]], RATE, "rectangular"),
        (b"", None, "empty (0 bytes)"),
        (b"this is not audio" * 20, None, "Cannot decode"),
        ("/no/such/file.wav", None, "No audio file"),
        ({"foo": 1}, None, "holds no audio"),
        ({"array": [0.1, 0.2]}, None, 'no "sampling_rate"'),
        (3.5, None, "Cannot read audio from a float"),
        (np.zeros(10, np.float32), 0, "positive integer"),
        (np.zeros(10, np.float32), 44.1, "positive integer"),
    ],
)
def test_one_kind_of_error_naming_the_input(audio, rate, message):
    with pytest.raises(AudioInputError, match=re.escape(message)):
        load_audio(audio, rate)


def test_non_finite_samples_in_a_file_are_refused(tmp_path):
    samples = np.zeros(RATE, np.float32)
    samples[1234] = np.inf
    (tmp_path / "bad.wav").write_bytes(wav(samples))
    with pytest.raises(
        AudioInputError, match=r"bad.wav' contains NaN or infinite values \(first at sample 1234\)"
    ):
        load_audio(tmp_path / "bad.wav")


def test_a_file_without_samples_is_empty(backend):
    with pytest.raises(AudioInputError, match="empty"):
        load_audio(wav(np.zeros(0, np.float32)))
