"""Tests of `MGAClapFeatureExtractor`: parity with `transformers.audio_utils` in both precisions, padding, cropping,
masks, input forms, error messages, save / load and the windowed-sinc resampler."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from transformers_mgaclap import MGAClapFeatureExtractor
from transformers_mgaclap.audio_input import resample as _resample

from conftest import tiny_model

SR = 32000
MAX_SAMPLES = 320_000
NUM_FRAMES = 1001
HOP = 320

# Project requirement: match the float64 `audio_utils` recipe to 1e-4 dB. With the float64 STFT the only differences
# left are FFT rounding (~1e-12 relative) and the float32 output (one ulp at 100 dB is 7.6e-6 dB). The default float32
# STFT redoes in float64 the frames whose bands float32 rounding could move by more than a few 1e-3 dB: 1.3e-3 dB
# measured on the sweep, where a plain float32 STFT is off by 0.35 dB.
PARITY_ATOL_DB = {"float64": 1e-4, "float32": 5e-3}
# Requirement (paper geometry, `benchmarks/check_feature_precision.py`): float32 features move the embeddings by at
# most 1e-4. This tiny model's embeddings are ~15x smaller; a plain float32 STFT moves them by 4e-6 to 2e-5 on the
# tonal signals, what is left with the float64 redo (<= 2.2e-7) is the features' last-ulp rounding.
EMBEDDING_ATOL = 2e-6


def reference_log_mel(waveform: np.ndarray) -> np.ndarray:
    """The official MGA-CLAP log-mel written with `transformers.audio_utils` in float64: `(frames, 64)`."""
    mel_filters = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=64,
        min_frequency=50.0,
        max_frequency=14000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )
    log_mel = spectrogram(
        np.asarray(waveform, dtype=np.float64),
        window_function(1024, "hann", periodic=True),
        frame_length=1024,
        hop_length=HOP,
        power=2.0,
        center=True,
        pad_mode="reflect",
        mel_filters=mel_filters,
        mel_floor=1e-10,
        log_mel="dB",
        reference=1.0,
        min_value=1e-10,
        db_range=None,
    )
    return log_mel.T


def make_signal(kind: str, num_samples: int = MAX_SAMPLES, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    duration = num_samples / SR
    if kind == "noise":
        return 0.1 * rng.standard_normal(num_samples)
    if kind == "sweep":  # 50 Hz -> 15 kHz linear chirp: pure tones leave bands 120 dB below the peak
        return 0.5 * np.sin(2 * np.pi * (50 * t + (15000 - 50) / (2 * duration) * t**2))
    if kind == "low_sine":
        return 0.9 * np.sin(2 * np.pi * 100 * t)
    if kind == "near_silent":  # hovers around the 1e-10 floor
        return 1e-5 * rng.standard_normal(num_samples)
    if kind == "silence_then_tone":
        return np.where(t < duration / 2, 0.0, 0.5 * np.sin(2 * np.pi * 440 * t))
    if kind == "clipped":  # an overdriven tone, hard-clipped at full scale: harmonics up to Nyquist
        return np.clip(3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(num_samples), -1, 1)
    raise ValueError(kind)


@pytest.fixture(scope="module")
def extractor() -> MGAClapFeatureExtractor:
    return MGAClapFeatureExtractor()


def features(extractor, audio, **kwargs) -> np.ndarray:
    return extractor(audio, sampling_rate=SR, **kwargs)["input_features"]


# ---------------------------------------------------------------------------------------------------------------------
# Parity


@pytest.fixture(scope="module")
def extractors() -> dict[str, MGAClapFeatureExtractor]:
    return {precision: MGAClapFeatureExtractor(precision=precision) for precision in PARITY_ATOL_DB}


@pytest.mark.parametrize("kind", ["noise", "sweep", "low_sine", "near_silent", "silence_then_tone"])
@pytest.mark.parametrize("input_dtype", [np.float64, np.float32])
def test_matches_audio_utils_reference(extractors, kind, input_dtype):
    waveform = make_signal(kind).astype(input_dtype)
    expected = reference_log_mel(waveform)
    for precision, extractor in extractors.items():
        actual = features(extractor, waveform)[0]
        assert actual.shape == expected.shape == (NUM_FRAMES, 64)
        np.testing.assert_allclose(
            actual, expected, rtol=0, atol=PARITY_ATOL_DB[precision], err_msg=precision
        )


@pytest.mark.parametrize("precision", list(PARITY_ATOL_DB))
def test_clips_of_any_length_match_the_reference_across_frame_blocks(precision):
    sweep = make_signal("sweep", 25 * SR)  # 2501 frames: two blocks of STFT frames
    actual = MGAClapFeatureExtractor(precision=precision)._long_log_mel(torch.from_numpy(sweep)).numpy()
    expected = reference_log_mel(sweep)
    assert actual.shape == expected.shape == (2501, 64)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=PARITY_ATOL_DB[precision])


def test_default_precision_is_float32():
    assert MGAClapFeatureExtractor().precision == "float32"


def test_float32_recomputes_in_float64_only_frames_with_bands_far_below_their_energy(monkeypatch):
    extractor = MGAClapFeatureExtractor()
    recomputed = []
    compute = extractor._windowed_mel_power

    def spy(windowed: torch.Tensor) -> torch.Tensor:
        if windowed.dtype == torch.float64:
            recomputed.append(windowed.shape[0])
        return compute(windowed)

    monkeypatch.setattr(extractor, "_windowed_mel_power", spy)
    features(extractor, make_signal("noise"))
    assert recomputed == []  # broadband audio keeps the float32 speed
    # Digital silence sits at the floor in float32 too; the pure tone of the second half leaves bands 120 dB down.
    features(extractor, make_signal("silence_then_tone"))
    assert len(recomputed) == 1 and abs(recomputed[0] - NUM_FRAMES // 2) <= 10  # 497 measured


def test_float32_features_leave_the_embeddings_unchanged():
    model = tiny_model()
    clips = [make_signal(kind) for kind in ("noise", "low_sine", "silence_then_tone", "sweep", "clipped")]
    outputs = {}
    with torch.no_grad():
        for precision in ("float32", "float64"):
            inputs = MGAClapFeatureExtractor(precision=precision)(
                clips, sampling_rate=SR, return_tensors="pt"
            )
            outputs[precision] = model.get_audio_features(**inputs)
    fast, exact = outputs["float32"], outputs["float64"]
    torch.testing.assert_close(fast.pooler_output, exact.pooler_output, rtol=0, atol=EMBEDDING_ATOL)
    torch.testing.assert_close(fast.local_embeds, exact.local_embeds, rtol=0, atol=EMBEDDING_ATOL)


def test_mel_filters_and_window_match_audio_utils(extractor):
    expected = mel_filter_bank(
        num_frequency_bins=513,
        num_mel_filters=64,
        min_frequency=50.0,
        max_frequency=14000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    )
    assert extractor.mel_filters.dtype == torch.float32 and extractor.mel_filters.shape == (513, 64)
    np.testing.assert_allclose(extractor.mel_filters.numpy(), expected, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(
        extractor.window.numpy(), window_function(1024, "hann", periodic=True), atol=1e-15
    )


# ---------------------------------------------------------------------------------------------------------------------
# Shapes, frames, masks


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
def test_shapes_and_dtypes(extractor, return_tensors):
    clips = [make_signal("noise", n).astype(np.float32) for n in (MAX_SAMPLES, 3 * SR, 12 * SR, 100)]
    batch = extractor(clips, sampling_rate=SR, return_tensors=return_tensors)
    assert set(batch.keys()) == {"input_features", "input_features_mask"}
    values, mask = batch["input_features"], batch["input_features_mask"]
    if return_tensors == "pt":
        assert values.dtype == torch.float32 and mask.dtype == torch.int64
    else:
        assert isinstance(values, np.ndarray) and values.dtype == np.float32 and mask.dtype == np.int64
    assert tuple(values.shape) == (4, NUM_FRAMES, 64)
    assert tuple(mask.shape) == (4, NUM_FRAMES)


@pytest.mark.parametrize("max_length_s, expected_frames", [(10.0, 1001), (1.0, 101), (2.5, 251)])
def test_frame_count_is_one_plus_samples_over_hop(max_length_s, expected_frames):
    short = MGAClapFeatureExtractor(max_length_s=max_length_s)
    assert short.num_frames == expected_frames == 1 + int(max_length_s * SR) // HOP
    assert features(short, make_signal("noise", 5000)).shape == (1, expected_frames, 64)


@pytest.mark.parametrize("padding_mode", ["repeatpad", "repeat", "zero"])
def test_mask_marks_frames_centred_in_the_clip(extractor, padding_mode):
    # Frame t is centred on sample t * 320: a 3 s clip (96 000 samples) owns frames 0..299; frame 300 is centred on
    # sample 96 000, the first padded one, whatever the padding holds.
    clips = [make_signal("noise", 3 * SR), make_signal("noise", 3 * SR + 1)]
    mask = extractor(clips, sampling_rate=SR, padding_mode=padding_mode)["input_features_mask"]
    assert mask[0, :300].all() and not mask[0, 300:].any()
    assert mask[1, :301].all() and not mask[1, 301:].any()


def test_mask_is_all_ones_for_clips_of_ten_seconds_or_more(extractor):
    clips = [make_signal("noise", MAX_SAMPLES), make_signal("noise", 12 * SR)]
    for truncation_mode in ("start", "center"):
        mask = extractor(clips, sampling_rate=SR, truncation_mode=truncation_mode)["input_features_mask"]
        assert mask.all()


# ---------------------------------------------------------------------------------------------------------------------
# Padding and truncation


def test_padding_modes_on_the_waveform(extractor):
    clip = torch.arange(1, 96_001, dtype=torch.float32)  # 3 s, nonzero everywhere
    repeatpad, valid = extractor._fit_to_length(clip, "repeatpad", "start")
    assert valid == 96_000
    torch.testing.assert_close(repeatpad[: 3 * 96_000], clip.repeat(3))
    assert not repeatpad[3 * 96_000 :].any()  # 32 000 trailing zeros

    repeat, valid = extractor._fit_to_length(clip, "repeat", "start")
    assert valid == 96_000
    torch.testing.assert_close(repeat, torch.cat([clip, clip, clip, clip[:32_000]]))

    zero, valid = extractor._fit_to_length(clip, "zero", "start")
    assert valid == 96_000
    torch.testing.assert_close(zero[:96_000], clip)
    assert not zero[96_000:].any()
    assert repeatpad.shape == repeat.shape == zero.shape == (MAX_SAMPLES,)


@pytest.mark.parametrize("padding_mode, clip_samples", [("repeatpad", 32_000), ("repeat", 96_000)])
def test_tiling_a_periodic_clip_gives_the_features_of_the_continuous_signal(
    extractor, padding_mode, clip_samples
):
    # 100 Hz has a period of 320 samples, which divides the clip length: tiling is seamless.
    continuous = 0.5 * np.sin(2 * np.pi * 100 * np.arange(MAX_SAMPLES) / SR)
    tiled = features(extractor, continuous[:clip_samples], padding_mode=padding_mode)[0]
    np.testing.assert_allclose(tiled, features(extractor, continuous)[0], rtol=0, atol=1e-4)


def test_truncation_modes(extractor):
    clip = torch.arange(12 * SR, dtype=torch.float32)
    start, valid = extractor._fit_to_length(clip, "repeatpad", "start")
    assert valid == MAX_SAMPLES and start[0] == 0 and start[-1] == MAX_SAMPLES - 1
    center, _ = extractor._fit_to_length(clip, "repeatpad", "center")
    assert center[0] == (12 * SR - MAX_SAMPLES) // 2
    offsets = [
        int(extractor._fit_to_length(clip, "repeatpad", "random", torch.Generator().manual_seed(seed))[0][0])
        for seed in range(5)
    ]
    again = [
        int(extractor._fit_to_length(clip, "repeatpad", "random", torch.Generator().manual_seed(seed))[0][0])
        for seed in range(5)
    ]
    assert offsets == again
    assert all(0 <= offset <= 12 * SR - MAX_SAMPLES for offset in offsets)
    assert any(offset != 0 for offset in offsets) and len(set(offsets)) > 1


def test_truncation_modes_on_features(extractor):
    clip = make_signal("sweep", 12 * SR)
    start = features(extractor, clip)[0]
    np.testing.assert_array_equal(start, features(extractor, clip[:MAX_SAMPLES])[0])
    center = features(extractor, clip, truncation_mode="center")[0]
    np.testing.assert_array_equal(center, features(extractor, clip[32_000 : 32_000 + MAX_SAMPLES])[0])
    random_a = features(extractor, clip, truncation_mode="random", generator=torch.Generator().manual_seed(3))
    random_b = features(extractor, clip, truncation_mode="random", generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(random_a, random_b)
    assert not np.array_equal(random_a[0], start)


def test_modes_set_at_init_are_the_defaults():
    clip = make_signal("noise", 12 * SR)
    centred = MGAClapFeatureExtractor(truncation_mode="center", padding_mode="zero")
    np.testing.assert_array_equal(
        features(centred, clip), features(MGAClapFeatureExtractor(), clip, truncation_mode="center")
    )


# ---------------------------------------------------------------------------------------------------------------------
# Input forms


def test_a_clip_does_not_depend_on_the_rest_of_the_batch(extractor):
    clip = make_signal("noise", 3 * SR, seed=1).astype(np.float32)
    others = [
        make_signal("sweep", 12 * SR).astype(np.float32),
        make_signal("noise", 100, seed=2).astype(np.float32),
    ]
    alone = extractor(clip, sampling_rate=SR)
    batch = extractor([others[0], clip, others[1]], sampling_rate=SR)
    np.testing.assert_array_equal(batch["input_features"][1], alone["input_features"][0])
    np.testing.assert_array_equal(batch["input_features_mask"][1], alone["input_features_mask"][0])


def test_multichannel_clip_is_mixed_to_the_channel_mean(extractor):
    stereo = np.stack([make_signal("noise", 3 * SR, seed=3), make_signal("sweep", 3 * SR)]).astype(np.float32)
    mixed = features(extractor, [stereo])
    np.testing.assert_allclose(mixed, features(extractor, stereo.mean(axis=0)), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(mixed, features(extractor, [torch.from_numpy(stereo)]))


def test_equivalent_input_forms(extractor):
    clips = np.stack([make_signal("noise", 8000, seed=s) for s in range(2)]).astype(np.float32)
    expected = features(extractor, list(clips))
    np.testing.assert_array_equal(features(extractor, clips), expected)  # 2-D array = batch of mono clips
    np.testing.assert_array_equal(features(extractor, torch.from_numpy(clips)), expected)
    np.testing.assert_array_equal(features(extractor, tuple(torch.from_numpy(clips))), expected)
    np.testing.assert_array_equal(
        features(extractor, clips[0].tolist()), expected[:1]
    )  # list of floats = one clip
    read_only = clips[1].copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(features(extractor, read_only), expected[1:])
    np.testing.assert_array_equal(features(extractor, clips[0][::-1].copy()[::-1]), expected[:1])


def test_huge_but_finite_samples_are_not_mistaken_for_inf(extractor):
    loud = np.full(1000, 3e38, dtype=np.float32)  # the float32 sum overflows; every sample is finite
    assert extractor(loud, sampling_rate=SR)["input_features"].shape == (1, NUM_FRAMES, 64)


def test_missing_sampling_rate_warns_and_assumes_32k(extractor, caplog):
    clip = make_signal("noise", 8000)
    with caplog.at_level(logging.WARNING):
        values = extractor(clip)["input_features"]
    assert "sampling_rate" in caplog.text
    np.testing.assert_array_equal(values, features(extractor, clip))


# ---------------------------------------------------------------------------------------------------------------------
# Errors


def _clip(samples: int = 8000) -> np.ndarray:
    return make_signal("noise", samples).astype(np.float32)


@pytest.mark.parametrize(
    "audio, kwargs, fragments",
    [
        (_clip(), {"sampling_rate": 16000}, ["32000", "16000", "resample=True"]),
        ([_clip(), np.zeros(0, np.float32)], {}, ["Clip 1", "empty"]),
        ([_clip(), np.array([0.1, np.nan], np.float32)], {}, ["Clip 1", "NaN"]),
        ([np.array([0.1, np.inf, 0.0])], {}, ["Clip 0", "infinite"]),
        (
            [_clip(), np.zeros((2, 2, 100), np.float32)],
            {},
            ["Clip 1", "shape (2, 2, 100)", "(channels, samples)"],
        ),
        ([np.zeros((8000, 2), np.float32)], {}, ["Clip 0", "(channels, samples)", "transpose"]),
        (np.zeros((8000, 2), np.float32), {}, ["(samples, channels)", "(channels, samples)", "audio.T"]),
        (np.zeros((2, 2, 100), np.float32), {}, ["shape (2, 2, 100)"]),
        ([], {}, ["empty batch"]),
        ((np.iinfo(np.int16).max * _clip()).astype(np.int16), {}, ["int16", "floating-point", "32768"]),
        ([torch.zeros(100, dtype=torch.int32)], {}, ["Clip 0", "int32"]),
        ([[[0.1, 0.2], [0.3]]], {}, ["Clip 0", "rectangular"]),
        ("audio.wav", {}, ["str"]),
        (_clip(), {"padding_mode": "reflect"}, ["padding_mode", "'repeatpad'", "'zero'"]),
        (_clip(), {"truncation_mode": "end"}, ["truncation_mode", "'start'", "'random'"]),
    ],
    ids=[
        "wrong-rate",
        "empty-clip",
        "nan",
        "inf",
        "3d-clip",
        "samples-channels-clip",
        "samples-channels-array",
        "3d-array",
        "empty-batch",
        "int16-pcm",
        "int-tensor",
        "ragged",
        "path",
        "bad-padding-mode",
        "bad-truncation-mode",
    ],
)
def test_bad_inputs_raise_helpful_errors(extractor, audio, kwargs, fragments):
    kwargs = {"sampling_rate": SR, **kwargs}
    with pytest.raises(ValueError) as error:
        extractor(audio, **kwargs)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"padding_mode": "pad"}, "padding_mode"),
        ({"truncation_mode": "x"}, "truncation_mode"),
        ({"precision": "f16"}, "precision"),
    ],
)
def test_bad_settings_raise(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        MGAClapFeatureExtractor(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Serialisation


def test_save_and_load_round_trip(tmp_path):
    original = MGAClapFeatureExtractor(padding_mode="zero", truncation_mode="center", precision="float64")
    original.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "mel_filters" not in saved and "window" not in saved and not any(k.startswith("_") for k in saved)
    assert (tmp_path / "preprocessor_config.json").stat().st_size < 2000
    assert saved["padding_mode"] == "zero" and saved["precision"] == "float64"

    loaded = MGAClapFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == original.to_dict()
    torch.testing.assert_close(loaded.mel_filters, original.mel_filters)
    clip = make_signal("noise", 12 * SR)
    np.testing.assert_array_equal(features(loaded, clip), features(original, clip))


def _saved_extractor(folder, precision: str | None) -> None:
    """Save a default extractor into `folder`, its `preprocessor_config.json` with `precision` set, or without it."""
    MGAClapFeatureExtractor().save_pretrained(folder)
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text())
    del config["precision"]
    if precision is not None:
        config["precision"] = precision
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "saved, expected", [(None, "float32"), ("float64", "float64"), ("float32", "float32")]
)
def test_saved_precision_is_kept_and_a_missing_one_is_the_default(tmp_path, saved, expected):
    _saved_extractor(tmp_path, saved)
    loaded = MGAClapFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.precision == expected
    clip = make_signal("sweep", 8000)
    np.testing.assert_array_equal(
        features(loaded, clip), features(MGAClapFeatureExtractor(precision=expected), clip)
    )


@pytest.mark.parametrize("saved", [None, "float32"])
def test_precision_passed_to_from_pretrained_overrides_the_saved_one(tmp_path, saved):
    _saved_extractor(tmp_path, saved)
    loaded, unused = MGAClapFeatureExtractor.from_pretrained(
        tmp_path, precision="float64", other=1, return_unused_kwargs=True
    )
    assert loaded.precision == "float64" and unused == {"other": 1}


# ---------------------------------------------------------------------------------------------------------------------
# Resampling


def _sine(freq: float, rate: int, num_samples: int) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(num_samples, dtype=torch.float64) / rate)


@pytest.mark.parametrize("orig_freq", [48000, 44100, 16000, 22050])
def test_resampled_sine_matches_a_sine_generated_at_32k(orig_freq):
    resampled = _resample(_sine(1000, orig_freq, orig_freq), orig_freq, SR)
    assert resampled.shape == (SR,) and resampled.dtype == torch.float64
    expected = _sine(1000, SR, SR)
    # Away from the edges (the signal is zero outside them) the only error is the filter's passband ripple.
    torch.testing.assert_close(resampled[200:-200], expected[200:-200], rtol=0, atol=1e-3)


@pytest.mark.parametrize("orig_freq, num_samples", [(48000, 48001), (44100, 44101), (16000, 999), (8000, 1)])
def test_resampled_length_is_ceil_of_scaled_length(orig_freq, num_samples):
    resampled = _resample(torch.randn(2, num_samples), orig_freq, SR)
    assert resampled.shape == (2, math.ceil(num_samples * SR / orig_freq))
    assert resampled.dtype == torch.float32


def test_tone_above_the_new_nyquist_is_removed():
    tone = _sine(20000, 48000, 48000)
    resampled = _resample(tone, 48000, SR)
    attenuation_db = 20 * math.log10(resampled[200:-200].pow(2).mean().sqrt() / tone.pow(2).mean().sqrt())
    assert attenuation_db < -40


def test_resample_identity_and_bad_rates():
    clip = torch.randn(100)
    assert _resample(clip, SR, SR) is clip
    with pytest.raises(ValueError, match="positive integers"):
        _resample(clip, 0, SR)
    with pytest.raises(ValueError, match="too large"):
        _resample(clip, 32001, SR)


def test_extractor_resamples_when_asked(extractor):
    clip = _sine(440, 48000, 48000 * 2).float().numpy()
    values = extractor(clip, sampling_rate=48000, resample=True)
    expected = features(extractor, _resample(torch.from_numpy(clip), 48000, SR))
    np.testing.assert_array_equal(values["input_features"], expected)
    assert values["input_features_mask"][0].sum() == 200  # 2 s at 32 kHz
