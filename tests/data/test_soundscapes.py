"""Tests of the built-in procedural soundscape data set (offline; numpy, plus datasets/torchcodec for the round trip)."""

import io
import itertools
import re
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from transformers_mgaclap.data import soundscapes as sc

SR = 32000
OVERLAP_RE = re.compile(r"\b(while|as)\b")
SEQUENCE_RE = re.compile(r"\b(then|before|after|followed by)\b")
CONNECTIVE_RE = re.compile(r"\b(while|as|then|before|after|followed|first)\b")


def _overlap_steps(events):
    """Independent re-statement of the caption rule: does each later event start before the earlier ones end?"""
    steps, latest = [], events[0]["offset"]
    for event in events[1:]:
        steps.append(event["onset"] < latest)
        latest = max(latest, event["offset"])
    return steps


def _mentions(caption, event_class):
    return any(p in caption for p in event_class.phrases) or any(
        n.split(" ", 1)[1] in caption for n in event_class.noun_phrases
    )


# ---------------------------------------------------------------------------------------------- classes


def test_at_least_twelve_distinct_classes():
    classes = sc.SOUND_EVENT_CLASSES
    assert len(classes) >= 12
    names, labels = [c.name for c in classes], [c.label for c in classes]
    assert len(set(names)) == len(names) and len(set(labels)) == len(labels)
    assert sc.class_names() == names and sc.class_labels() == labels
    for event_class in classes:
        assert re.fullmatch(r"[a-z_]+", event_class.name)
        assert len(event_class.phrases) >= 2 and len(event_class.noun_phrases) >= 2
        for noun in event_class.noun_phrases:
            assert noun.split(" ", 1)[0] in ("a", "an"), noun
        for text in (event_class.label, *event_class.phrases, *event_class.noun_phrases):
            assert not CONNECTIVE_RE.search(text), text  # so captions can be checked for connectives
        assert sc.get_sound_event_class(event_class.name) is event_class
        assert sc.get_sound_event_class(event_class.label) is event_class


@pytest.mark.parametrize("sampling_rate", [16000, 32000])
def test_synthesize_shape_peak_and_determinism(sampling_rate):
    for event_class in sc.SOUND_EVENT_CLASSES:
        for num_samples in (round(0.05 * sampling_rate), sampling_rate):
            x = event_class.synthesize(np.random.default_rng(3), num_samples, sampling_rate)
            assert x.shape == (num_samples,) and np.all(np.isfinite(x))
            assert np.max(np.abs(x)) == pytest.approx(1.0)
            # The 5 ms fades start and end near zero (no clicks).
            assert abs(x[0]) < 0.05 and abs(x[-1]) < 0.05, event_class.name
        same = event_class.synthesize(np.random.default_rng(3), sampling_rate, sampling_rate)
        other = event_class.synthesize(np.random.default_rng(4), sampling_rate, sampling_rate)
        assert np.array_equal(same, x) and not np.allclose(other, x), event_class.name


def _log_band_features(x, sampling_rate=SR, n_fft=1024, hop=512, num_bands=32):
    """Mean power in log-spaced bands for the first and the second half of the signal, in dB re the max."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    band = np.digitize(np.fft.rfftfreq(n_fft, 1 / sampling_rate), np.geomspace(50, 15000, num_bands + 1))
    bands = np.stack(
        [power[:, band == k].mean(axis=1) for k in range(1, num_bands + 1) if np.any(band == k)], axis=1
    )
    half = len(bands) // 2
    reference = bands.mean(axis=0).max()
    return np.concatenate(
        [10 * np.log10(part.mean(axis=0) / reference + 1e-4) for part in (bands[:half], bands[half:])]
    )


def test_classes_are_acoustically_distinct():
    """Nearest-centroid classification of held-out instances on log band spectra (two halves: sweep direction)."""
    features = {}
    for index, event_class in enumerate(sc.SOUND_EVENT_CLASSES):
        features[event_class.name] = []
        for k in range(9):
            rng = np.random.default_rng([7, index, k])
            x = event_class.synthesize(rng, round(rng.uniform(0.8, 2.5) * SR), SR)
            features[event_class.name].append(_log_band_features(x))
    centroids = {name: np.mean(f[:5], axis=0) for name, f in features.items()}
    results = []
    for name, f in features.items():
        for held_out in f[5:]:
            predicted = min(centroids, key=lambda c: np.linalg.norm(held_out - centroids[c]))
            results.append((name, predicted))
    accuracy = np.mean([truth == predicted for truth, predicted in results])
    assert accuracy >= 0.9, [r for r in results if r[0] != r[1]]


# ---------------------------------------------------------------------------------------------- clips


def test_determinism_and_clip_independence():
    kwargs = dict(duration=3.0)
    first = sc.generate_soundscapes(4, seed=5, **kwargs)
    again = sc.generate_soundscapes(4, seed=5, **kwargs)
    shorter = sc.generate_soundscapes(2, seed=5, **kwargs)
    other_seed = sc.generate_soundscapes(4, seed=6, **kwargs)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a["audio"]["array"], b["audio"]["array"])
        assert (a["captions"], a["events"], a["clip_id"]) == (b["captions"], b["events"], b["clip_id"])
    for a, b in zip(first[:2], shorter, strict=True):  # clip i depends only on (seed, i)
        assert np.array_equal(a["audio"]["array"], b["audio"]["array"]) and a["captions"] == b["captions"]
    for a, b in zip(first, other_seed, strict=True):
        assert not np.array_equal(a["audio"]["array"], b["audio"]["array"])
    # Clips are distinct from one another, and reproducible one at a time through clip_rng.
    assert len({c["audio"]["array"].tobytes() for c in first}) == 4
    config = sc.SoundscapeConfig(**kwargs)
    single = sc.generate_soundscape(sc.clip_rng(5, 3), config)
    assert np.array_equal(single["audio"]["array"], first[3]["audio"]["array"])


def test_split_streams_are_disjoint():
    kwargs = dict(duration=2.0)
    train = sc.generate_soundscapes(3, seed=0, **kwargs)
    assert all(
        np.array_equal(a["audio"]["array"], b["audio"]["array"])
        for a, b in zip(train, sc.generate_soundscapes(3, seed=0, split_name="train", **kwargs), strict=True)
    )
    arrays = {"train": [c["audio"]["array"].tobytes() for c in train]}
    for split in ("validation", "test"):
        clips = sc.generate_soundscapes(3, seed=0, split_name=split, **kwargs)
        arrays[split] = [c["audio"]["array"].tobytes() for c in clips]
        assert clips[0]["clip_id"] == f"soundscape_s0_{split}_000000"
    all_clips = [a for values in arrays.values() for a in values]
    assert len(set(all_clips)) == len(all_clips)


def test_clip_format_labels_and_ranges():
    config = sc.SoundscapeConfig()
    for index in range(40):
        clip = sc.generate_soundscape(sc.clip_rng(11, index), config)
        array = clip["audio"]["array"]
        assert clip["audio"]["sampling_rate"] == SR
        assert array.dtype == np.float32 and array.shape == (10 * SR,) and np.all(np.isfinite(array))
        assert np.max(np.abs(array)) <= config.peak_level + 1e-6
        events = clip["events"]
        assert config.min_events_per_clip <= len(events) <= config.max_events_per_clip
        assert events == sorted(events, key=lambda e: (e["onset"], e["offset"]))
        for event in events:
            assert set(event) == {"event_label", "onset", "offset"}
            assert event["event_label"] in sc.class_labels()
            assert 0.0 <= event["onset"] < event["offset"] <= config.duration
            assert event["offset"] - event["onset"] <= config.max_event_duration + 1e-9
            for bound in (event["onset"], event["offset"]):  # on the sample grid
                assert abs(bound * SR - round(bound * SR)) < 1e-6
        assert clip["labels"] == sorted({e["event_label"] for e in events})


def test_event_boundaries_match_nonzero_samples_exactly():
    # One event and no background: the non-zero samples are exactly [onset, offset).
    for index in range(32):
        clip = sc.generate_soundscape(
            sc.clip_rng(3, index),
            sc.SoundscapeConfig(duration=4.0, add_background=False, max_events_per_clip=1),
        )
        (event,) = clip["events"]
        nonzero = np.flatnonzero(clip["audio"]["array"])
        assert nonzero[0] == round(event["onset"] * SR) and nonzero[-1] + 1 == round(event["offset"] * SR), (
            event
        )
    # Several (possibly overlapping) events: every non-zero sample is inside an event and every event's first
    # and last samples are non-zero.
    config = sc.SoundscapeConfig(duration=6.0, add_background=False, max_events_per_clip=4)
    for index in range(24):
        clip = sc.generate_soundscape(sc.clip_rng(4, index), config)
        array = clip["audio"]["array"]
        covered = np.zeros(array.size, dtype=bool)
        for event in clip["events"]:
            start, stop = round(event["onset"] * SR), round(event["offset"] * SR)
            covered[start:stop] = True
            assert array[start] != 0 and array[stop - 1] != 0
        assert np.array_equal(covered | (array != 0), covered)
        # The same clip with a background has exactly the same events and text.
        with_background = sc.generate_soundscape(
            sc.clip_rng(4, index), sc.SoundscapeConfig(duration=6.0, max_events_per_clip=4)
        )
        assert with_background["events"] == clip["events"] and with_background["captions"] == clip["captions"]
        assert np.mean(with_background["audio"]["array"] != 0) > 0.99


def test_config_overrides_are_applied():
    clips = sc.generate_soundscapes(
        6,
        seed=1,
        sampling_rate=16000,
        duration=3.0,
        classes=["siren", "dripping"],  # a name and a label
        min_events_per_clip=2,
        max_events_per_clip=2,
        min_event_duration=0.5,
        max_event_duration=1.0,
        num_captions=3,
    )
    for clip in clips:
        assert clip["audio"]["sampling_rate"] == 16000 and clip["audio"]["array"].shape == (48000,)
        assert len(clip["events"]) == 2 and len(clip["captions"]) == 3
        assert set(clip["labels"]) <= {"siren", "dripping"}
        for event in clip["events"]:
            assert event["offset"] - event["onset"] <= 1.0 + 1e-9


# ---------------------------------------------------------------------------------------------- captions


def test_captions_follow_the_temporal_rule():
    seen_connectives = set()
    for index in range(80):
        clip = sc.generate_soundscape(sc.clip_rng(21, index), sc.SoundscapeConfig())
        events, captions = clip["events"], clip["captions"]
        assert clip["caption"] == captions[0] and len(captions) == 5 and len(set(captions)) >= 3
        steps = _overlap_steps(events)
        any_pair_overlaps = any(
            a["onset"] < b["offset"] and b["onset"] < a["offset"]
            for a, b in itertools.combinations(events, 2)
        )
        for caption in captions:
            assert caption.strip() and len(caption.split()) <= 25, caption
            for event in events:
                assert _mentions(caption, sc.get_sound_event_class(event["event_label"])), (caption, event)
            overlap_words = OVERLAP_RE.findall(caption)
            sequence_words = SEQUENCE_RE.findall(caption)
            assert len(overlap_words) == sum(steps), (caption, events)
            assert len(sequence_words) == len(steps) - sum(steps), (caption, events)
            assert bool(overlap_words) == any_pair_overlaps
            seen_connectives.update(overlap_words + sequence_words)
    assert seen_connectives == {"while", "as", "then", "before", "after", "followed by"}


def test_caption_events_on_handmade_events():
    rng = np.random.default_rng(0)
    sequential = [
        {"event_label": "bell", "onset": 5.0, "offset": 6.0},
        {"event_label": "siren", "onset": 1.0, "offset": 3.0},  # unsorted input is fine
    ]
    for caption in sc.caption_events(sequential, rng, num_captions=4):
        assert not OVERLAP_RE.search(caption) and SEQUENCE_RE.search(caption)
        siren = min(caption.find(p) for p in ("siren", "wails", "blares") if p in caption)
        bell = min(caption.find(p) for p in ("bell", "chime") if p in caption)
        assert siren < bell, caption  # time order
    overlapping = [
        {"event_label": "hum", "onset": 0.0, "offset": 6.0},
        {"event_label": "bell", "onset": 2.0, "offset": 3.0},
    ]
    for caption in sc.caption_events(overlapping, rng, num_captions=4):
        assert OVERLAP_RE.search(caption) and not SEQUENCE_RE.search(caption)
    touching = [
        {"event_label": "beep", "onset": 0.0, "offset": 1.0},
        {"event_label": "whistle", "onset": 1.0, "offset": 2.0},
    ]
    assert all(not OVERLAP_RE.search(c) for c in sc.caption_events(touching, rng, num_captions=4))
    repeated = [
        {"event_label": "knocking", "onset": 0.0, "offset": 1.0},
        {"event_label": "knocking", "onset": 2.0, "offset": 3.0},
    ]
    for caption in sc.caption_events(repeated, rng, num_captions=4):
        assert "again" in caption or "another" in caption
    same = sc.caption_events(sequential, np.random.default_rng(9), 3)
    assert same == sc.caption_events(sequential, np.random.default_rng(9), 3)
    with pytest.raises(ValueError, match="at least one event"):
        sc.caption_events([], rng)


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            dict(min_events_per_clip=4, max_events_per_clip=2),
            r"min_events_per_clip \(4\) must be <= max_events_per_clip \(2\)",
        ),
        (
            dict(min_event_duration=3.0, max_event_duration=1.0),
            r"min_event_duration \(3.0\) must be <= max_event_duration",
        ),
        (dict(min_event_duration=3.0, duration=2.0), r"must be <= duration"),
        (dict(min_event_duration=0.0), r"min_event_duration must be >= 0.05"),
        (dict(min_events_per_clip=0), r"min_events_per_clip must be >= 1"),
        (dict(background_level_db=(-20.0, -40.0)), r"background_level_db: min \(-20.0\) must be <= max"),
        (dict(event_snr_db=(10.0,)), r"event_snr_db must be a \(min, max\) pair"),
        (dict(num_clips=-1), r"num_clips must be >= 0"),
        (dict(sampling_rate=4000), r"sampling_rate must be >= 8000"),
        (dict(duration=0), r"duration must be a positive"),
        (dict(num_captions=0), r"num_captions must be >= 1"),
        (dict(peak_level=1.5), r"peak_level must be in"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        sc.SoundscapeConfig(**overrides)


def test_unknown_class_and_option_errors():
    with pytest.raises(ValueError, match="Unknown sound event class 'dog'") as info:
        sc.SoundscapeConfig(classes=["siren", "dog"])
    assert all(name in str(info.value) for name in sc.class_names())
    with pytest.raises(ValueError, match="Unknown soundscape option"):
        sc.generate_soundscapes(1, durration=3.0)
    with pytest.raises(ValueError, match="Unsupported WAV subtype"):
        sc.encode_wav(np.zeros(4, dtype=np.float32), SR, "PCM_24")


# ---------------------------------------------------------------------------------------------- WAV + datasets


def test_encode_wav_is_deterministic_and_readable():
    soundfile = pytest.importorskip("soundfile")
    array = sc.generate_soundscapes(1, seed=2, duration=1.0)[0]["audio"]["array"]
    float_bytes = sc.encode_wav(array, SR)
    assert float_bytes == sc.encode_wav(array, SR) and len(float_bytes) == 4 * array.size + 56
    decoded, rate = soundfile.read(io.BytesIO(float_bytes), dtype="float32")
    assert rate == SR and np.array_equal(decoded, array)
    decoded16, _ = soundfile.read(io.BytesIO(sc.encode_wav(array, SR, "PCM_16")), dtype="float32")
    assert np.max(np.abs(decoded16 - array)) <= 0.5 / 32768 + 1e-9


def test_dataset_round_trip():
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("torchcodec")
    kwargs = dict(duration=2.0)
    dataset = sc.build_soundscape_dataset(3, seed=2, **kwargs)
    clips = sc.generate_soundscapes(3, seed=2, **kwargs)
    assert dataset.column_names == ["audio", "caption", "captions", "events", "labels", "clip_id"]
    assert (
        isinstance(dataset.features["audio"], datasets.Audio)
        and dataset.features["audio"].sampling_rate == SR
    )
    for index, clip in enumerate(clips):
        row = dataset[index]
        decoded = np.asarray(row["audio"]["array"])
        assert row["audio"]["sampling_rate"] == SR and decoded.shape == clip["audio"]["array"].shape
        assert np.array_equal(decoded, clip["audio"]["array"])  # FLOAT WAV: lossless
        for name in ("caption", "captions", "events", "labels", "clip_id"):
            assert row[name] == clip[name], name
    raw = dataset.cast_column("audio", datasets.Audio(decode=False))
    again = sc.build_soundscape_dataset(3, seed=2, **kwargs).cast_column(
        "audio", datasets.Audio(decode=False)
    )
    assert raw[0]["audio"]["path"] == "soundscape_000000.wav"
    assert [r["audio"]["bytes"] for r in raw] == [r["audio"]["bytes"] for r in again]  # byte-identical

    pcm = sc.build_soundscape_dataset(1, seed=2, wav_subtype="PCM_16", **kwargs)
    assert np.max(np.abs(np.asarray(pcm[0]["audio"]["array"]) - clips[0]["audio"]["array"])) <= 1.0 / 32768


def test_dataset_splits():
    datasets = pytest.importorskip("datasets")
    splits = sc.build_soundscape_splits(2, 1, 1, seed=4, duration=1.0)
    assert isinstance(splits, datasets.DatasetDict) and list(splits) == ["train", "validation", "test"]
    assert [len(splits[s]) for s in splits] == [2, 1, 1]
    raw = {s: splits[s].cast_column("audio", datasets.Audio(decode=False)) for s in splits}
    train = sc.build_soundscape_dataset(2, seed=4, duration=1.0).cast_column(
        "audio", datasets.Audio(decode=False)
    )
    assert [r["audio"]["bytes"] for r in raw["train"]] == [r["audio"]["bytes"] for r in train]
    blobs = [r["audio"]["bytes"] for s in raw for r in raw[s]]
    assert len(set(blobs)) == len(blobs)
    assert str(splits["validation"].split) == "validation"
    empty = sc.build_soundscape_dataset(0, seed=4)  # e.g. num_test=0 in the training script
    assert len(empty) == 0 and isinstance(empty.features["audio"], datasets.Audio)


def test_large_datasets_are_built_in_parts_that_stay_under_arrows_2_gib_per_array(monkeypatch):
    """A part holds at most `_PART_BYTES` of audio (2 560 clips of 10 s, 3.3 GB, once overflowed one binary array);
    the parts concatenate to the same rows, in order, with the split kept."""
    datasets = pytest.importorskip("datasets")
    whole = sc.build_soundscape_dataset(5, seed=3, split_name="validation", duration=0.5)
    labelled = sc.build_labelled_clip_dataset(3, seed=3, duration=0.5, classes=["beep", "hum"])
    monkeypatch.setattr(
        sc, "_PART_BYTES", 5 * 4 * 16000 // 2
    )  # two FLOAT WAV clips of 0.5 s at 32 kHz per part
    parted = sc.build_soundscape_dataset(5, seed=3, split_name="validation", duration=0.5)
    raw = [d.cast_column("audio", datasets.Audio(decode=False)) for d in (whole, parted)]
    assert raw[1].data.column("audio").num_chunks == 3
    assert raw[0].to_list() == raw[1].to_list() and str(parted.split) == "validation"
    assert parted.features == whole.features
    labelled_parted = sc.build_labelled_clip_dataset(3, seed=3, duration=0.5, classes=["beep", "hum"])
    assert labelled_parted.data.column("audio").num_chunks == 3
    assert labelled_parted.features == labelled.features
    raw = [d.cast_column("audio", datasets.Audio(decode=False)) for d in (labelled, labelled_parted)]
    assert raw[0].to_list() == raw[1].to_list()
    assert (
        len(
            sc.dataset_from_columns(
                {"audio": []}, features=datasets.Features({"audio": whole.features["audio"]})
            )
        )
        == 0
    )


# ---------------------------------------------------------------------------------------------- packaging + speed


def test_module_imports_with_numpy_only():
    """The module itself needs only numpy: datasets and soundfile are imported lazily."""
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.modules["datasets"] = None
        sys.modules["soundfile"] = None
        spec = importlib.util.spec_from_file_location("soundscapes_only", {sc.__file__!r})
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        clip = module.generate_soundscapes(1, seed=0, duration=1.0)[0]
        assert clip["audio"]["array"].shape == (32000,)
        assert "torch" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generation_is_fast():
    start = time.perf_counter()
    sc.generate_soundscapes(20, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"20 clips of 10 s took {elapsed:.1f} s"


def test_dataset_builds_show_a_bar_in_clips_when_asked(capfd):
    sc.build_soundscape_dataset(2, seed=0, duration=1.0)
    sc.build_labelled_clip_dataset(1, duration=1.0, classes=["beep"])
    assert capfd.readouterr().err == ""
    sc.build_soundscape_dataset(2, seed=0, split_name="validation", duration=1.0, progress=True)
    sc.build_labelled_clip_dataset(1, duration=1.0, classes=["beep", "whistle"], progress=True)
    err = capfd.readouterr().err
    assert "Synthesising validation clips" in err and "2/2" in err and "clips" in err
