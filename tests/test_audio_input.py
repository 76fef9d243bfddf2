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

from conftest import record_decoding, silent_flac, without_length

RATE = 44100


@pytest.fixture(scope="module")
def stereo() -> np.ndarray:
    """(channels, samples) float32 noise, 7.3 s at 44.1 kHz."""
    return (np.random.default_rng(0).standard_normal((2, int(7.3 * RATE))) * 0.1).astype(np.float32)


def wav(audio: np.ndarray, rate: int = RATE, subtype: str = "FLOAT", file_format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T if audio.ndim == 2 else audio, rate, format=file_format, subtype=subtype)
    return buffer.getvalue()


def recording(calls: list, what: str, method):
    """`method`, appending `(what, start, length)` to `calls` before each call."""

    def wrapper(self, *args):
        calls.append((what, *args[-2:]))
        return method(self, *args)

    return wrapper


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


@pytest.mark.parametrize("file_format, subtype", [("FLAC", "PCM_24"), ("OGG", "VORBIS")])
def test_long_windows_are_read_block_by_block(stereo, backend, monkeypatch, file_format, subtype):
    """A window of many samples is decoded a block at a time (bounded memory) and still equals the whole."""
    payload = wav(stereo, subtype=subtype, file_format=file_format)
    with open_audio(payload) as source:
        whole = source.read(0, source.num_samples)
        monkeypatch.setattr(audio_input, "_BLOCK_ELEMENTS", 20_000)  # 10 000 stereo samples per block
        blocks = []
        monkeypatch.setattr(type(source), "_read", recording(blocks, "read", type(source)._read))
        np.testing.assert_array_equal(source.read(12_345, 100_000), whole[12_345:112_345])
    assert [length for _, _, length in blocks] == [10_000] * 10


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


# ---------------------------------------------------------------------------------------------------------------
# Limits: what opening may cost is checked on the header, before decoding
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def decoding(monkeypatch):
    return record_decoding(monkeypatch)


LIMITS = audio_input.AudioLimits(max_seconds=600, sampling_rates=(1000, 384000), max_channels=8)


def test_a_declared_duration_over_the_limit_is_refused_before_decoding(backend, decoding):
    two_hours = silent_flac(7200, 1000)  # 2 h declared in 0.2 MB
    with pytest.raises(audio_input.AudioTooLongError, match="longer than the 600 s accepted"):
        with open_audio(two_hours, limits=LIMITS):
            pass
    assert decoding == []
    with open_audio(two_hours) as source:  # no limits: opened, and still nothing decoded until read
        assert source.duration == 7200 and decoding == []


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            wav(np.zeros(1000, np.float32), rate=10_000_000),
            "sampled at 10000000 Hz; accepted rates are 1000 to",
        ),
        (wav(np.zeros(1000, np.float32), rate=800), "sampled at 800 Hz"),
        (wav(np.zeros((9, 1000), np.float32), rate=8000), "has 9 channels; at most 8"),
    ],
)
def test_rates_and_channels_outside_the_limits_are_refused_before_decoding(
    backend, decoding, payload, message
):
    with pytest.raises(AudioInputError, match=re.escape(message)):
        with open_audio(payload, limits=LIMITS):
            pass
    assert decoding == []
    with open_audio(payload) as source:  # the same audio opens without limits
        assert source.num_samples == 1000


def test_arrays_are_held_to_the_limits():
    with pytest.raises(audio_input.AudioTooLongError):
        with open_audio(np.zeros(601 * 1000, np.float32), 1000, limits=LIMITS):
            pass
    with pytest.raises(AudioInputError, match="has 9 channels"):
        with open_audio(np.zeros((9, 100), np.float32), 8000, limits=LIMITS):
            pass


def test_a_stream_without_a_declared_length_is_counted_in_chunks_up_to_the_limit(decoding, monkeypatch):
    """torchcodec: the samples are counted a chunk at a time, never whole; past the limit one seek decides."""
    monkeypatch.setattr(audio_input, "_BLOCK_ELEMENTS", 40_000)
    unknown = without_length(silent_flac(37, 8000))
    with open_audio(unknown, limits=LIMITS) as source:
        assert source.num_samples == 37 * 8000
        counting = [call for call in decoding if call[0] == "count"]
        assert counting[0] == ("count", 600 * 8000, 1)  # the probe at the limit finds nothing
        assert (
            len(counting) == 1 + -(-37 * 8000 // 40_000)
            and max(length for _, _, length in counting) == 40_000
        )
        # The windows are read after counting from a decoder of their own.
        np.testing.assert_array_equal(source.read(36 * 8000, 8000), np.zeros(8000, np.float32))
    decoding.clear()
    with pytest.raises(audio_input.AudioTooLongError):
        with open_audio(unknown, limits=audio_input.AudioLimits(max_seconds=10)):
            pass
    assert decoding == [("count", 10 * 8000, 1)]  # one seek past the limit, nothing before it decoded


def test_soundfile_refuses_a_stream_without_a_declared_length(monkeypatch):
    monkeypatch.setattr(audio_input, "is_torchcodec_usable", lambda decode: False)
    with pytest.raises(AudioInputError, match="does not declare its length"):
        with open_audio(without_length(silent_flac(3, 8000))):
            pass


def test_without_a_decoder_a_file_is_refused_with_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setattr(audio_input, "is_torchcodec_usable", lambda decode: False)
    monkeypatch.setattr(audio_input, "is_soundfile_available", lambda: False)
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(800, np.float32), 8000)
    with pytest.raises(AudioInputError, match=re.escape('pip install "soundfile>=0.12"')):
        load_audio(str(path))
