"""Frame-level search over a collection (`transformers_mgaclap.search`), with a tiny random MGA-CLAP.

What is checked against an independent computation: frame times and embeddings (against `embed_audio` on a single
window), FAISS Flat (against a float64 recomputation), the torch fallback (against FAISS Flat), moment merging
(against frames whose cosines are set by hand, decoded by hand), resumable indexing (an interrupted build against an
uninterrupted one).
"""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from transformers_mgaclap import MGAClapFeatureExtractor, MGAClapProcessor
from transformers_mgaclap.data.soundscapes import encode_wav
from transformers_mgaclap.embedding import embed_audio, embed_text
from transformers_mgaclap.search import (
    SearchIndexError,
    build_index,
    choose_index_type,
    embed_query,
    faiss_factory,
    frame_table,
    load_index,
    model_fingerprint,
    recording_curve,
    recording_table,
    save_index,
    search,
    search_by_embedding,
)
from transformers_mgaclap.search import index as search_index

from conftest import tiny_model

datasets = pytest.importorskip("datasets")
pytest.importorskip("faiss")

RATE = 32000
DURATIONS = (4.0, 10.0, 23.0)  # shorter than, exactly, and longer than a window (the windowed path)
FRAME = 10 / 32


def waveform(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * time) * (np.sin(2 * np.pi * 0.2 * time) > 0)
    return (tone + 0.02 * rng.standard_normal(len(time))).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def processor(tiny_text_model_dir):
    return MGAClapProcessor(MGAClapFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model_dir))


@pytest.fixture(scope="module")
def collection():
    cells = [
        {"bytes": encode_wav(waveform(seconds, seed), RATE), "path": f"rec_{seed}.wav"}
        for seed, seconds in enumerate(DURATIONS)
    ]
    dataset = datasets.Dataset.from_dict({"audio": cells, "name": [f"recording {i}" for i in range(3)]})
    return dataset.cast_column("audio", datasets.Audio(sampling_rate=RATE))


@pytest.fixture(scope="module")
def built(model, processor, collection, tmp_path_factory):
    return build_index(model, processor, collection, tmp_path_factory.mktemp("index"), index_type="Flat")


def test_every_frame_has_its_absolute_time_and_normalised_embedding(built, model, processor):
    recordings = built.recordings
    assert recordings[:]["recording_id"] == ["rec_0.wav", "rec_1.wav", "rec_2.wav"]
    assert recordings[:]["duration"] == pytest.approx(list(DURATIONS))
    expected_counts = [int(np.ceil(seconds / FRAME - 1e-9)) for seconds in DURATIONS]
    assert recordings[:]["num_frames"] == expected_counts
    assert recordings[:]["first_frame"] == [0, expected_counts[0], sum(expected_counts[:2])]
    assert built.num_frames == sum(expected_counts) and built.hours == pytest.approx(sum(DURATIONS) / 3600)
    frames = built.frames.with_format("numpy")[:]
    long = {name: column[sum(expected_counts[:2]) :] for name, column in frames.items()}  # 23 s: 4 windows
    assert set(long["recording"].tolist()) == {2}
    np.testing.assert_allclose(long["onset"], np.arange(expected_counts[2]) * FRAME)
    assert long["offset"][-1] == pytest.approx(23.0) and long["offset"][-2] == pytest.approx(73 * FRAME)
    norms = np.linalg.norm(frames["embedding"].astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    # The 10 s recording is one window: its frames are embed_audio's (zero padding) frames, in float16.
    single = embed_audio(model, processor, [waveform(10.0, 1)], padding_mode="zero", truncation_mode="start")
    stored = frames["embedding"][expected_counts[0] : sum(expected_counts[:2])].astype(np.float32)
    np.testing.assert_allclose(stored, single.frame_embeds[0].numpy(), atol=2e-3)
    clip = recordings.with_format("numpy")[:]["clip_embedding"][1].astype(np.float32)
    np.testing.assert_allclose(clip, single.clip_embeds[0].numpy(), atol=2e-3)


def test_faiss_flat_equals_a_float64_recomputation(built, model, processor):
    query = embed_text(model, processor, ["a dog barks"]).text_embeds[0].double().numpy()
    scores, rows = built.nearest("frames", query.astype(np.float32), 20)
    matrix = built.frames.with_format("numpy")[:]["embedding"].astype(np.float64)
    exact = matrix @ query
    expected = np.argsort(-exact, kind="stable")[:20]
    assert rows.tolist() == expected.tolist()
    np.testing.assert_allclose(scores, exact[expected], atol=1e-5)


def test_search_by_embedding_is_search_after_embed_query(built):
    vector = embed_query(built, "a dog barks")
    assert search_by_embedding(built, vector, k=4, num_clips=2) == search(
        built, "a dog barks", k=4, num_clips=2
    )
    with pytest.raises(ValueError, match=r"must be a \(16,\) embedding"):
        search_by_embedding(built, vector[:8])


def test_torch_fallback_equals_faiss_flat(built, model, processor):
    exact = load_index(built.path, model, processor, use_faiss=False)
    assert not exact.use_faiss and built.use_faiss
    for query in ("a dog barks", "rain on a window"):
        assert search(exact, query, k=5) == search(built, query, k=5)
    query = embed_text(model, processor, ["a bell"]).text_embeds[0].numpy()
    faiss_scores, faiss_rows = built.nearest("frames", query, 30)
    torch_scores, torch_rows = exact.nearest("frames", query, 30)
    assert faiss_rows.tolist() == torch_rows.tolist()
    np.testing.assert_allclose(faiss_scores, torch_scores, atol=1e-5)


def test_moments_equal_the_sed_decoder_on_the_same_scores(built, model, processor):
    from transformers_mgaclap.processing_mgaclap import post_process_sound_event_detection

    moments = search(built, "a siren", k=4, min_gap_seconds=0.5, median_filter_frames=3)
    assert 1 <= len(moments) <= 4
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)
    query = embed_text(model, processor, ["a siren"]).text_embeds[0].numpy()
    # The default threshold: the score of the last of the 10 * k frames retrieved.
    threshold = float(built.nearest("frames", query, search_index.FRAMES_PER_MOMENT * 4)[0].min())
    assert {moment["threshold"] for moment in moments} == {threshold}
    frames = built.frames.with_format("numpy")[:]
    for moment in moments:
        recording = built.recordings[moment["row"]]
        span = slice(recording["first_frame"], recording["first_frame"] + recording["num_frames"])
        curve = frames["embedding"][span].astype(np.float32) @ query
        boundaries = np.append(frames["onset"][span], frames["offset"][span][-1])
        events = post_process_sound_event_detection(
            torch.from_numpy(curve)[:, None],
            torch.from_numpy(boundaries),
            ["q"],
            threshold=threshold,
            duration=recording["duration"],
        )[0]
        decoded = [(e["onset"], e["offset"], pytest.approx(e["score"], abs=1e-6)) for e in events]
        assert (moment["onset"], moment["offset"], moment["score"]) in decoded
        clip = np.asarray(recording["clip_embedding"], dtype=np.float32) @ query
        assert moment["clip_score"] == pytest.approx(float(clip), abs=1e-5)


def hand_made_index(model, processor, folder, curves: list[list[float]]):
    """An index whose frames have exactly the cosines `curves` (one per recording) with the text "a dog barks"."""
    query = embed_text(model, processor, ["a dog barks"]).text_embeds[0].double().numpy()
    other = np.random.default_rng(0).standard_normal(len(query))
    other -= (other @ query) * query
    other /= np.linalg.norm(other)
    recording, onsets, embeddings = [], [], []
    for index, curve in enumerate(curves):
        scores = np.asarray(curve)
        embeddings.append(scores[:, None] * query + np.sqrt(1 - scores**2)[:, None] * other)
        recording += [index] * len(curve)
        onsets.append(np.arange(len(curve)) * FRAME)
    onsets = np.concatenate(onsets)
    embeddings = np.concatenate(embeddings)
    counts = [len(curve) for curve in curves]
    frames = frame_table(np.array(recording), onsets, onsets + FRAME, embeddings)
    recordings = recording_table(
        [f"hand_{i}" for i in range(len(curves))],
        np.arange(len(curves)),
        np.array(counts) * FRAME,
        np.array(counts),
        np.stack([query] * len(curves)),
    )
    settings = {"format_version": 1, "model": model_fingerprint(model, processor), "window_seconds": 10.0}
    index = save_index(folder, frames, recordings, settings, "Flat")
    index.model, index.processor = model, processor
    return index


def test_moment_merging_against_hand_computed_frames(model, processor, tmp_path):
    first = [0, 0.8, 0.9, 0, 0, 0.85, 0.9, 0, 0, 0.99, 0, 0, 0.95, 0.95, 0, 0]
    second = [0, 0, 0.6, 0.7, 0.6, 0, 0, 0]
    index = hand_made_index(model, processor, tmp_path, [first, second])
    moments = search(index, "a dog barks", k=5, threshold=0.5, median_filter_frames=3, min_gap_seconds=0.5)
    # Median of 3 (reflected edges): frames 1-2 and 5-6 stay at 0.8 / 0.85 and the 2-frame gap between them is
    # bridged (ceil(0.5 s / 10/32 s) = 2); the lone 0.99 at frame 9 is filtered away; frames 12-13 stay 0.95.
    expected = [
        ("hand_0", 12 * FRAME, 14 * FRAME, 0.95),
        ("hand_0", 1 * FRAME, 7 * FRAME, 0.85),
        ("hand_1", 2 * FRAME, 5 * FRAME, 0.6),
    ]
    assert len(moments) == len(expected)
    for moment, (recording, onset, offset, score) in zip(moments, expected, strict=True):
        assert moment["recording"] == recording
        assert moment["onset"] == pytest.approx(onset) and moment["offset"] == pytest.approx(offset)
        assert moment["score"] == pytest.approx(score, abs=2e-3)
        assert moment["clip_score"] == pytest.approx(1.0, abs=2e-3)
    # Without a gap rule the bridged moment splits in two; k cuts the list.
    split = search(index, "a dog barks", k=2, threshold=0.5, min_gap_seconds=0.0)
    assert [(m["onset"], m["offset"]) for m in split] == [
        pytest.approx((12 * FRAME, 14 * FRAME)),
        pytest.approx((5 * FRAME, 7 * FRAME)),
    ]


def test_an_interrupted_build_resumes_to_the_same_index(model, processor, collection, tmp_path, monkeypatch):
    reference = build_index(model, processor, collection, tmp_path / "whole", index_type="Flat", shard_size=1)
    real = search_index.embed_recording
    calls = []

    def killed_at_the_second(*args, **kwargs):
        calls.append(kwargs["name"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill between two recordings leaves
        return real(*args, **kwargs)

    monkeypatch.setattr(search_index, "embed_recording", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, processor, collection, tmp_path / "resumed", index_type="Flat", shard_size=1)
    with pytest.raises(SearchIndexError, match="unfinished build"):
        load_index(tmp_path / "resumed", model, processor)
    calls.clear()
    monkeypatch.setattr(
        search_index, "embed_recording", lambda *a, **k: calls.append(k["name"]) or real(*a, **k)
    )
    resumed = build_index(model, processor, collection, tmp_path / "resumed", index_type="Flat", shard_size=1)
    assert calls == ["Recording 1 (rec_1.wav)", "Recording 2 (rec_2.wav)"]  # the first was not embedded again
    for name in ("frames", "recordings"):
        assert getattr(resumed, name).to_dict() == getattr(reference, name).to_dict()
    pairs = list(zip(resumed.frames[:]["recording"], resumed.frames[:]["onset"], strict=True))
    assert len(pairs) == len(set(pairs))  # nothing doubled
    assert search(resumed, "a dog barks", k=3) == search(reference, "a dog barks", k=3)
    # A finished index is loaded, not rebuilt.
    calls.clear()
    build_index(model, processor, collection, tmp_path / "resumed", index_type="Flat", shard_size=1)
    assert calls == []


def test_query_by_audio_lands_on_that_recording(built):
    moments = search(built, waveform(23.0, 2)[: 12 * RATE], k=3, sampling_rate=RATE, num_clips=1)
    assert moments and {moment["recording"] for moment in moments} == {"rec_2.wav"}
    whole = search(built, waveform(10.0, 1), k=3, sampling_rate=RATE)
    assert whole[0]["recording"] == "rec_1.wav" and whole[0]["clip_score"] == pytest.approx(1.0, abs=2e-3)


def test_clip_level_first_stage_restricts_the_recordings(built):
    everywhere = search(built, "a dog barks", k=10)
    first_stage = search(built, "a dog barks", k=10, num_clips=1)
    assert len({moment["recording"] for moment in first_stage}) == 1
    assert {moment["recording"] for moment in first_stage} <= {m["recording"] for m in everywhere} | {
        first_stage[0]["recording"]
    }


@pytest.mark.parametrize(
    "query, options, message",
    [
        ("", {}, "query is empty"),
        ("   ", {}, "query is empty"),
        ("a dog", {"k": 0}, "`k` must be an integer >= 1"),
        ("a dog", {"k": 2.5}, "`k` must be an integer >= 1"),
        ("a dog", {"num_clips": 0}, "`num_clips`"),
        ("a dog", {"median_filter_frames": 2}, "median_filter_frames"),
    ],
)
def test_bad_queries_are_refused(built, query, options, message):
    with pytest.raises(ValueError, match=message):
        search(built, query, **options)


def test_bad_index_types_and_options_are_refused_before_any_audio(model, processor, collection, tmp_path):
    with pytest.raises(ValueError, match="Unknown `index_type` 'IVFPQ'"):
        build_index(model, processor, collection, tmp_path, index_type="IVFPQ")
    with pytest.raises(ValueError, match="shard_size"):
        build_index(model, processor, collection, tmp_path, shard_size=0)
    with pytest.raises(ValueError, match="IVF-PQ needs at least 256"):
        faiss_factory("IVF-PQ", 100, 16)
    assert not (tmp_path / "frames").exists()


def test_an_index_of_another_model_is_refused(built, processor, collection, tmp_path):
    with pytest.raises(SearchIndexError, match="other weights"):
        load_index(built.path, tiny_model(seed=1), processor)
    with pytest.raises(SearchIndexError, match="projection size 16, but this model's is 8"):
        load_index(built.path, tiny_model(projection_dim=8), processor)
    with pytest.raises(SearchIndexError, match="another model configuration"):
        load_index(built.path, tiny_model(codebook_size=12), processor)
    with pytest.raises(
        SearchIndexError, match="other weights"
    ):  # nor may a build in that folder go on with it
        build_index(tiny_model(seed=1), processor, collection, built.path, index_type="Flat")


def test_a_corrupt_index_file_is_refused(built, model, processor, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built.path, copy)
    (copy / "frames.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(SearchIndexError, match="frames.faiss is not a readable FAISS index"):
        load_index(copy, model, processor)
    (copy / "search_index.json").write_text("{")
    with pytest.raises(SearchIndexError, match="corrupt"):
        load_index(copy, model, processor)
    with pytest.raises(SearchIndexError, match="not a finished search index"):
        load_index(tmp_path / "nowhere", model, processor)


def test_index_type_rule():
    assert choose_index_type(1) == "Flat" and choose_index_type(100_000) == "Flat"
    assert choose_index_type(100_001) == "IVF" and choose_index_type(1_000_000) == "IVF"
    assert choose_index_type(1_000_001) == "IVF-PQ"
    assert faiss_factory("IVF-PQ", 1_152_000, 256) == ("IVF1073,PQ64", {"nprobe": 134})


@pytest.mark.parametrize("index_type", ["IVF", "IVF-PQ", "HNSW"])
def test_approximate_indexes_find_the_exact_neighbours(model, processor, tmp_path, index_type):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16))
    vectors = centres[rng.integers(0, 20, 4000)] + 0.3 * rng.standard_normal((4000, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    recordings = np.repeat(np.arange(40), 100)
    onsets = np.tile(np.arange(100) * FRAME, 40)
    index = save_index(
        tmp_path,
        frame_table(recordings, onsets, onsets + FRAME, vectors),
        recording_table(
            [str(i) for i in range(40)],
            np.arange(40),
            np.full(40, 100 * FRAME),
            np.full(40, 100),
            vectors[::100],
        ),
        {"format_version": 1, "model": model_fingerprint(model, processor)},
        index_type,
    )
    assert index.settings["index_type"] == index_type
    exact = load_index(tmp_path, model, processor, use_faiss=False)
    approximate = load_index(tmp_path, model, processor)
    recall = []
    for query in vectors[rng.integers(0, 4000, 20)]:
        found = set(approximate.nearest("frames", query.astype(np.float32), 10)[1].tolist())
        recall.append(
            len(found & set(exact.nearest("frames", query.astype(np.float32), 10)[1].tolist())) / 10
        )
    assert np.mean(recall) >= 0.9


def test_a_folder_of_audio_files_is_indexed(model, processor, tmp_path):
    import soundfile

    folder = tmp_path / "sounds"
    folder.mkdir()
    for seed, seconds in enumerate((3.0, 12.0)):
        soundfile.write(folder / f"take_{seed}.wav", waveform(seconds, seed), RATE)
    index = build_index(model, processor, str(folder), tmp_path / "index")
    assert sorted(index.recordings[:]["recording_id"]) == ["take_0.wav", "take_1.wav"]
    assert sorted(index.recordings[:]["duration"]) == pytest.approx([3.0, 12.0])
    assert search(index, "a dog barks", k=1)


def test_without_faiss_the_search_is_exact_and_says_so(model, processor, collection, tmp_path, monkeypatch):
    import importlib.util

    from transformers_mgaclap.utils.cli import MissingExtraError

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else find_spec(name, *a)
    )
    monkeypatch.setattr(search_index, "faiss_available", lambda: False)
    warnings = []
    monkeypatch.setattr(search_index.logger, "warning", warnings.append)
    with pytest.raises(MissingExtraError, match=r'needs faiss.*pip install "transformers-mgaclap\[search\]"'):
        build_index(model, processor, collection, tmp_path / "ivf", index_type="IVF")
    index = build_index(model, processor, collection.select([0]), tmp_path / "exact")
    assert not index.use_faiss and not (tmp_path / "exact" / "frames.faiss").exists()
    assert index.settings["index_type"] == "exact (no FAISS)"
    assert (
        warnings and "FAISS is not installed: searching the 13 frames with an exact torch scan" in warnings[0]
    )
    assert 'pip install "transformers-mgaclap[search]"' in warnings[0]
    reopened = load_index(tmp_path / "exact", model, processor)
    assert not reopened.use_faiss and len(warnings) == 2
    query = embed_query(reopened, "a dog barks")
    exact = reopened.frames.with_format("numpy")[:]["embedding"].astype(np.float64) @ query
    assert reopened.nearest("frames", query, 5)[1].tolist() == np.argsort(-exact, kind="stable")[:5].tolist()
    assert search(reopened, "a dog barks", k=2)


def test_decoding_segments_gives_the_whole_curve_events(model, processor, tmp_path):
    """Moments are decoded on segments around the retrieved frames; they must be the whole recordings' events."""
    from transformers_mgaclap.processing_mgaclap import post_process_sound_event_detection

    rng = np.random.default_rng(3)
    smooth = [np.convolve(rng.normal(0, 1, 406), np.ones(7) / np.sqrt(7), "valid") for _ in range(3)]
    curves = [np.clip(0.2 + 0.2 * curve, -0.9, 0.97) for curve in smooth]  # events of a few frames, in bursts
    index = hand_made_index(model, processor, tmp_path, [curve.tolist() for curve in curves])
    query = embed_query(index, "a dog barks")
    for options in ({}, {"median_filter_frames": 5, "min_gap_seconds": 1.0}, {"median_filter_frames": 1}):
        moments = search_by_embedding(index, query, k=1000, num_frames=150, **options)
        expected = []
        for number in range(3):
            boundaries, curve = recording_curve(index, number, query)
            events = post_process_sound_event_detection(
                torch.from_numpy(curve)[:, None],
                torch.from_numpy(boundaries),
                ["q"],
                threshold=moments[0]["threshold"],
                duration=400 * FRAME,
                **options,
            )[0]
            expected += [(f"hand_{number}", e["onset"], e["offset"], e["score"]) for e in events]
        found = [(m["recording"], m["onset"], m["offset"], m["score"]) for m in moments]
        assert len(found) > 5 and sorted(found) == sorted(expected)
